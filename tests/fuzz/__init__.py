"""Fuzz and property tests: the codecs and the SOAP normaliser, fed random and mutated input, never
raise anything but their protocol error. The allowed outcomes per target are spelt out in
`dmds.bench.fuzz`; these tests and the atheris long form share its oracles."""
