"""Annotators: offline (LiteRT models), VLLM (OpenAI protocol), simulated (benchmarks)."""
