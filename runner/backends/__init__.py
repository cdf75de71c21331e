"""Container backends: where task containers actually run."""
