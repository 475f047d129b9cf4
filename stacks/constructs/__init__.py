"""The project's own constructs: the repeated patterns every stack uses, defined once."""
