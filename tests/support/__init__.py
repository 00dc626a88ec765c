"""Test support: real upstream registries, token server, image builders and a fault proxy."""
