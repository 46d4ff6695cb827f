"""Everything that talks to Kafka.

- :mod:`~selectd.kafka.base`: the client-neutral half: what the commit protocol sees of a source
  (:class:`~selectd.kafka.base.Source`, ``(topic, partition)`` pairs, :class:`~selectd.kafka.base.BrokerError`,
  :class:`~selectd.kafka.base.CommitFailed`) and the produce-failure policy of every producer
  (:class:`~selectd.kafka.base.ProducerSink`);
- :mod:`~selectd.kafka.settings`: what ``[kafka]`` means to each client (kafka-python keyword
  arguments, librdkafka properties), every key mapped to both;
- :mod:`~selectd.kafka.source`, :mod:`~selectd.kafka.sink`: the kafka-python client (the default);
- :mod:`~selectd.kafka.confluent_source`, :mod:`~selectd.kafka.confluent_sink`: the confluent-kafka
  (librdkafka) client, from the extra ``selectd[confluent]``; each client's types and errors stay
  inside its own two modules;
- :mod:`~selectd.kafka.clients`: the source and sink of ``[kafka] client``;
- :mod:`~selectd.kafka.commit`: the commit protocol, typed to ``Source`` and
  :class:`selectd.sinks.base.Sink` only, the same for both clients;
- :mod:`~selectd.kafka.admin`: topic helpers for the demo, the load tests and the tests.

A client classifies its own errors: which mean the brokers are not reachable yet when it is opened
(raise ``BrokerError``: :func:`selectd.app.connect` retries it), what kind of failure each produce
error is (``ProducerSink._failure_kind``; which kinds no retry fixes is decided once, in
:mod:`~selectd.kafka.base`), and which codecs it has (:func:`~selectd.kafka.clients.client_problems`).
The pipeline, the commit loop and the start-up retry are the same for both clients.
"""
