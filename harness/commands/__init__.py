"""One module per `nodeport-harness` sub-command. Nothing imports these but the CLI."""
