/*
 * The test-only Avro IPC reference peer: Apache Avro's own NettyServer + GenericResponder and NettyTransceiver +
 * GenericRequestor (avro-ipc 1.8.2, netty 3.9.9) on Flume's AvroSourceProtocol, with netty 3's ZlibEncoder and
 * ZlibDecoder in the pipeline for compression-type deflate, as Flume's AvroSource and NettyAvroRpcClient add them.
 * Flumery's tests build it with javac from the jars inside the pyspark 2.4.8 sdist (tests/avro_peer.py) and run
 * it against Flumery's avro source and sink.
 *
 *   AvroPeer md5
 *       prints the protocol's MD5 (hex) and its canonical JSON, as Avro's Java Protocol computes them.
 *   AvroPeer server PORT DEFLATE(0|1|LEVEL) OUT_FILE|- [FAIL_FIRST]
 *       serves append/appendBatch; appends each event to OUT_FILE as "base64(body) TAB base64(k):base64(v),...";
 *       answers FAILED to the first FAIL_FIRST calls (the events of those calls are not written); prints
 *       "LISTENING <port>" once bound.  With OUT_FILE "-" it only counts (for benchmarks).
 *   AvroPeer client HOST PORT DEFLATE(0|1|LEVEL) EVENTS BATCH [BODY_BYTES]
 *       sends EVENTS events (bodies "java-<n>", padded to BODY_BYTES if given, headers seq=<n> and peer=java):
 *       the first with append, the rest with appendBatch in batches of BATCH; exits 2 at the first status that
 *       is not OK; prints "SENT <events> <seconds>" at the end.
 */
import java.io.FileOutputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Base64;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.avro.Protocol;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.ipc.NettyServer;
import org.apache.avro.ipc.NettyTransceiver;
import org.apache.avro.ipc.generic.GenericRequestor;
import org.apache.avro.ipc.generic.GenericResponder;
import org.jboss.netty.channel.Channel;
import org.jboss.netty.channel.ChannelFactory;
import org.jboss.netty.channel.ChannelPipeline;
import org.jboss.netty.channel.ChannelPipelineFactory;
import org.jboss.netty.channel.Channels;
import org.jboss.netty.channel.socket.nio.NioClientSocketChannelFactory;
import org.jboss.netty.channel.socket.nio.NioServerSocketChannelFactory;
import org.jboss.netty.handler.codec.compression.ZlibDecoder;
import org.jboss.netty.handler.codec.compression.ZlibEncoder;

public class AvroPeer {
  // Flume's flume-ng-sdk/src/main/avro/flume.avdl, as JSON.
  static final String PROTOCOL_JSON = "{\"protocol\":\"AvroSourceProtocol\",\"namespace\":\"org.apache.flume.source.avro\","
      + "\"types\":[{\"type\":\"enum\",\"name\":\"Status\",\"symbols\":[\"OK\",\"FAILED\",\"UNKNOWN\"]},"
      + "{\"type\":\"record\",\"name\":\"AvroFlumeEvent\",\"fields\":[{\"name\":\"headers\",\"type\":{\"type\":\"map\","
      + "\"values\":\"string\"}},{\"name\":\"body\",\"type\":\"bytes\"}]}],"
      + "\"messages\":{\"append\":{\"request\":[{\"name\":\"event\",\"type\":\"AvroFlumeEvent\"}],\"response\":\"Status\"},"
      + "\"appendBatch\":{\"request\":[{\"name\":\"events\",\"type\":{\"type\":\"array\",\"items\":\"AvroFlumeEvent\"}}],"
      + "\"response\":\"Status\"}}}";

  static int level(String arg) {
    int value = Integer.parseInt(arg);
    return value == 1 ? 6 : value;      // "1" means deflate at Flume's default level 6
  }

  public static void main(String[] args) throws Exception {
    Protocol protocol = Protocol.parse(PROTOCOL_JSON);
    switch (args[0]) {
      case "md5": {
        StringBuilder hex = new StringBuilder();
        for (byte b : protocol.getMD5()) hex.append(String.format("%02x", b));
        System.out.println(hex);
        System.out.println(protocol.toString());
        break;
      }
      case "server":
        server(protocol, Integer.parseInt(args[1]), level(args[2]), args[3], args.length > 4 ? Integer.parseInt(args[4]) : 0);
        break;
      case "client":
        System.exit(client(protocol, args[1], Integer.parseInt(args[2]), level(args[3]), Integer.parseInt(args[4]),
            Integer.parseInt(args[5]), args.length > 6 ? Integer.parseInt(args[6]) : 0));
        break;
      default:
        throw new IllegalArgumentException("mode must be md5, server or client");
    }
  }

  // --- server --------------------------------------------------------------------------------------------------
  static class Recorder extends GenericResponder {
    final Schema status;
    final PrintStream out;
    final AtomicLong failuresLeft;
    final AtomicLong received = new AtomicLong();

    Recorder(Protocol protocol, PrintStream out, int failFirst) {
      super(protocol);
      this.status = protocol.getType("org.apache.flume.source.avro.Status");
      this.out = out;
      this.failuresLeft = new AtomicLong(failFirst);
    }

    @Override
    public Object respond(Protocol.Message message, Object request) {
      GenericRecord params = (GenericRecord) request;
      List<GenericRecord> events = new ArrayList<>();
      if (message.getName().equals("append")) {
        events.add((GenericRecord) params.get("event"));
      } else {
        for (Object e : (GenericData.Array<?>) params.get("events")) events.add((GenericRecord) e);
      }
      if (failuresLeft.getAndDecrement() > 0) {
        return new GenericData.EnumSymbol(status, "FAILED");
      }
      if (out != null) {
        StringBuilder lines = new StringBuilder();
        for (GenericRecord event : events) {
          ByteBuffer body = (ByteBuffer) event.get("body");
          byte[] bytes = new byte[body.remaining()];
          body.duplicate().get(bytes);
          lines.append(Base64.getEncoder().encodeToString(bytes)).append('\t');
          boolean first = true;
          for (Map.Entry<?, ?> h : ((Map<?, ?>) event.get("headers")).entrySet()) {
            if (!first) lines.append(',');
            first = false;
            lines.append(b64(h.getKey().toString())).append(':').append(b64(h.getValue().toString()));
          }
          lines.append('\n');
        }
        synchronized (out) {
          out.print(lines);
          out.flush();
        }
      }
      received.addAndGet(events.size());
      return new GenericData.EnumSymbol(status, "OK");
    }
  }

  static String b64(String text) {
    return Base64.getEncoder().encodeToString(text.getBytes(StandardCharsets.UTF_8));
  }

  static void server(Protocol protocol, int port, final int level, String outFile, int failFirst) throws Exception {
    PrintStream out = outFile.equals("-") ? null : new PrintStream(new FileOutputStream(outFile, true), false, "UTF-8");
    Recorder recorder = new Recorder(protocol, out, failFirst);
    ChannelPipelineFactory pipelines = new ChannelPipelineFactory() {
      @Override
      public ChannelPipeline getPipeline() {
        ChannelPipeline pipeline = Channels.pipeline();
        if (level > 0) {                 // as Flume's AvroSource: inflater and deflater first in the pipeline
          pipeline.addFirst("deflater", new ZlibEncoder(level));
          pipeline.addFirst("inflater", new ZlibDecoder());
        }
        return pipeline;
      }
    };
    NettyServer server = new NettyServer(recorder, new InetSocketAddress("127.0.0.1", port),
        new NioServerSocketChannelFactory(Executors.newCachedThreadPool(), Executors.newCachedThreadPool()),
        pipelines, null);
    server.start();
    System.out.println("LISTENING " + server.getPort());
    System.out.flush();
    // Runs until killed (the tests stop it with SIGTERM) or until its standard input closes.
    while (System.in.read() != -1) { }
    server.close();
  }

  // --- client --------------------------------------------------------------------------------------------------
  static class DeflatingFactory implements ChannelFactory {
    final ChannelFactory base;
    final int level;

    DeflatingFactory(ChannelFactory base, int level) {
      this.base = base;
      this.level = level;
    }

    @Override
    public Channel newChannel(ChannelPipeline pipeline) {
      pipeline.addFirst("deflater", new ZlibEncoder(level));
      pipeline.addFirst("inflater", new ZlibDecoder());
      return base.newChannel(pipeline);
    }

    @Override
    public void shutdown() { base.shutdown(); }

    @Override
    public void releaseExternalResources() { base.releaseExternalResources(); }
  }

  static GenericRecord event(Schema schema, int n, int bodyBytes) {
    GenericRecord event = new GenericData.Record(schema);
    Map<CharSequence, CharSequence> headers = new HashMap<>();
    headers.put("seq", Integer.toString(n));
    headers.put("peer", "java");
    StringBuilder body = new StringBuilder("java-").append(n);
    while (body.length() < bodyBytes) body.append('x');
    event.put("headers", headers);
    event.put("body", ByteBuffer.wrap(body.toString().getBytes(StandardCharsets.UTF_8)));
    return event;
  }

  static int client(Protocol protocol, String host, int port, int level, int events, int batch, int bodyBytes)
      throws Exception {
    ChannelFactory factory = new NioClientSocketChannelFactory(Executors.newCachedThreadPool(),
        Executors.newCachedThreadPool());
    if (level > 0) factory = new DeflatingFactory(factory, level);
    NettyTransceiver transceiver = new NettyTransceiver(new InetSocketAddress(host, port), factory, 20000L);
    GenericRequestor requestor = new GenericRequestor(protocol, transceiver);
    Schema eventSchema = protocol.getType("org.apache.flume.source.avro.AvroFlumeEvent");
    Protocol.Message append = protocol.getMessages().get("append");
    Protocol.Message appendBatch = protocol.getMessages().get("appendBatch");
    long started = System.nanoTime();
    int sent = 0;
    try {
      if (events > 0) {
        GenericRecord params = new GenericData.Record(append.getRequest());
        params.put("event", event(eventSchema, 0, bodyBytes));
        Object status = requestor.request("append", params);
        if (!status.toString().equals("OK")) {
          System.out.println("STATUS " + status);
          return 2;
        }
        sent = 1;
      }
      while (sent < events) {
        int size = Math.min(batch, events - sent);
        GenericData.Array<GenericRecord> array = new GenericData.Array<>(size, appendBatch.getRequest().getField("events").schema());
        for (int i = 0; i < size; i++) array.add(event(eventSchema, sent + i, bodyBytes));
        GenericRecord params = new GenericData.Record(appendBatch.getRequest());
        params.put("events", array);
        Object status = requestor.request("appendBatch", params);
        if (!status.toString().equals("OK")) {
          System.out.println("STATUS " + status);
          return 2;
        }
        sent += size;
      }
    } finally {
      transceiver.close();
      factory.releaseExternalResources();
    }
    System.out.println("SENT " + sent + " " + (System.nanoTime() - started) / 1e9);
    return 0;
  }
}
