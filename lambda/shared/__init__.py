"""Code shared by the project's Lambda handlers (packaged next to each handler's folder)."""
