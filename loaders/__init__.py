"""Built-in loader backends, registered through the ``palabre.loaders`` entry-point group."""
