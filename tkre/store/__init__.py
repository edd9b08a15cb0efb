"""Where stage outputs live: the content-addressed artifact store, its manifests and locks."""
