"""The offline provider: a statistical summary of the input, written without a language model."""
