"""Test helpers: a real llama-cpp-python server on 127.0.0.1 and a fault-injecting proxy in front of it."""
