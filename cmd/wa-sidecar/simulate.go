package main

import (
	"os"

	"github.com/urfave/cli/v2"

	"github.com/wa-sidecar/wa-sidecar/bridge/sim"
)

// simulateBridgeCommand runs the simulated bridge that --demo and the tests
// supervise. It is hidden: it is a stand-in for Node.js, not a feature.
func simulateBridgeCommand() *cli.Command {
	return &cli.Command{
		Name:            "simulate-bridge",
		Usage:           "act as the Hermes WhatsApp bridge, without Node.js or WhatsApp",
		Hidden:          true,
		SkipFlagParsing: true,
		Action: func(c *cli.Context) error {
			if code := sim.Main(c.Args().Slice(), os.Stdout, os.Stderr); code != 0 {
				return cli.Exit("", code)
			}
			return nil
		},
	}
}
