/*
 * Flume's flume-ng-sdk/src/main/thrift/flume.thrift (Apache License 2.0): the protocol of Flume's ThriftSource.
 * The thrift tests compile it with Apache Thrift's compiler (Debian thrift-compiler) for Apache Thrift's Python
 * library, the reference peer of Flumery's thrift source and sink.
 */
namespace java org.apache.flume.thrift

struct ThriftFlumeEvent {
  1: required map <string, string> headers,
  2: required binary body,
}

enum Status {
  OK,
  FAILED,
  ERROR,
  UNKNOWN
}

service ThriftSourceProtocol {
  Status append(1: ThriftFlumeEvent event),
  Status appendBatch(1: list<ThriftFlumeEvent> events),
}
