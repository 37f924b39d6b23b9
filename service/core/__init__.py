"""The core every layer may import: settings, the error tree, time, and when to retry."""
