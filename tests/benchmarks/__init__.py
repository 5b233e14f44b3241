"""Tests of the paper benchmark (`gkt bench`)."""
