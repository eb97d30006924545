"""The parts a learning process is composed of: distributor, client work, aggregator, finalizer."""
