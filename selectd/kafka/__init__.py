"""Everything that talks to Kafka.

- :mod:`~selectd.kafka.base`: the client-neutral half: what the commit protocol sees of a source
  (:class:`~selectd.kafka.base.Source`, ``(topic, partition)`` pairs, :class:`~selectd.kafka.base.BrokerError`,
  :class:`~selectd.kafka.base.CommitFailed`) and the produce-failure policy of every producer
  (:class:`~selectd.kafka.base.ProducerSink`);
- :mod:`~selectd.kafka.settings`, :mod:`~selectd.kafka.source`, :mod:`~selectd.kafka.sink`: the
  kafka-python client (keyword arguments from ``[kafka]``, the consumer, the producer); its types
  and errors stay inside these three modules;
- :mod:`~selectd.kafka.commit`: the commit protocol, typed to ``Source`` and
  :class:`selectd.sinks.base.Sink` only;
- :mod:`~selectd.kafka.admin`: topic helpers for the demo, the load tests and the tests.

Another client is another ``Source`` and another ``ProducerSink`` next to these, classifying its
own errors: which mean the brokers are not reachable yet when a client is opened (raise
``BrokerError``: :func:`selectd.app.connect` retries it), which produce errors no retry fixes
(``ProducerSink._is_permanent``; everything else, timeouts included, is retried and leaves the
batch uncommitted), and which codecs it has (``settings.codec_problems``). The pipeline, the
commit loop and the start-up retry stay as they are.
"""
