"""The subcommands of the command line, one module per concern: asking ComfyUI (`check`,
`backends`), the HTTP API's keys, the workflow packs (`workflows`, `import`) and `generate`.
`bot.__main__` parses the arguments and calls them."""
