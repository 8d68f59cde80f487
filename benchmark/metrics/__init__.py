"""Built-in metrics; every module here is imported by the metric registry and registers its metrics."""
