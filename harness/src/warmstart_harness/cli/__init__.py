"""The harness's ``warmstart`` subcommands (a plugin of the product's CLI)."""
