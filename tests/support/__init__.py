"""Test servers and helpers shared by the suite and by bench/: nothing here is a test."""
