"""mailpulse's configuration types: one typed, validated mechanism (pydantic 2) for every config file.

* :mod:`mailpulse.config.base`: the section base class (unknown keys are errors, strict types),
  shared field types, the broker section, reading TOML and secrets;
* :mod:`mailpulse.config.validation`: validation errors as one sentence per problem;
* :mod:`mailpulse.config.node`: :class:`~mailpulse.config.node.NodeConfig`, the one node config
  type (the node daemon, ``mailpulse node check-config`` and ``mailpulse image flash``);
* :mod:`mailpulse.config.collector`: :class:`~mailpulse.config.collector.CollectorConfig`;
* :mod:`mailpulse.config.docs`: ``docs/config.md``, rendered from the field descriptions.
"""
