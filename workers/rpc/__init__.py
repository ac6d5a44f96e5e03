"""Wire protocols shared by a source and a sink of the same kind (the avro hop: Netty framing, Avro IPC, TLS,
Flume's IP filter).  Sources and sinks never import each other; both import from here."""
