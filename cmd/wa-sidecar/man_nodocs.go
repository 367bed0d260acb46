//go:build urfave_cli_no_docs

package main

import "github.com/urfave/cli/v2"

// manCommand is absent from a build without urfave/cli's documentation
// generator.
func manCommand() *cli.Command { return nil }
