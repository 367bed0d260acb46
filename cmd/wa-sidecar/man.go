//go:build !urfave_cli_no_docs

package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

// manCommand writes the manual page urfave/cli generates from the
// commands and flags, for 'just man'. The release build leaves it out
// (-tags urfave_cli_no_docs drops the generator and its dependencies).
func manCommand() *cli.Command {
	return &cli.Command{
		Name:   "man",
		Usage:  "print the manual page (troff), as 'just man' installs it",
		Hidden: true,
		Action: func(c *cli.Context) error {
			page, err := c.App.ToManWithSection(1)
			if err != nil {
				return cli.Exit("wa-sidecar: man: "+err.Error(), exitError)
			}
			fmt.Fprint(c.App.Writer, page)
			return nil
		},
	}
}
