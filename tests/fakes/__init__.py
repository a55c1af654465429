"""In-process fakes of the exporter's sources, for fast tests of the wiring."""
