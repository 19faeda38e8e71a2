"""Data: tfds loaders, device-resident arrays and on-device stream generators."""
