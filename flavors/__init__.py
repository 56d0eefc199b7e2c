"""Built-in flavors. Each registers through the ``clustercore.flavors`` entry point,
exactly as an external flavor would; the core never imports this package."""
