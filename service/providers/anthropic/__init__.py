"""Claude through the official anthropic SDK: the only package that imports it."""
