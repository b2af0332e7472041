"""One module per database engine. Import only the one you need: each imports its own driver."""
