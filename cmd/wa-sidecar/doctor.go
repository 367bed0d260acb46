package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/wa-sidecar/wa-sidecar/bridge"
	"github.com/wa-sidecar/wa-sidecar/bridge/gateway"
	"github.com/wa-sidecar/wa-sidecar/signals"
)

func doctorCommand() *cli.Command {
	return &cli.Command{
		Name:  "doctor",
		Usage: "show what the gateway would run, found as wa-sidecar run finds it, and what would stop it adopting the bridge",
		Description: "Reads the Hermes home (config.yaml, .env, the install tree) the way the gateway does and prints\n" +
			"the bridge script, port, session, mode and environment it would use, where each came from,\n" +
			"every place it looked, and the problems it found. It starts nothing.\n\n" +
			"Examples:\n" +
			"   wa-sidecar doctor\n" +
			"   wa-sidecar doctor --hermes-home /srv/hermes --json",
		Flags:        append(discoveryFlags(), &cli.BoolFlag{Name: "json", Usage: "print JSON"}),
		OnUsageError: onUsageError,
		Action:       doctorAction,
	}
}

// doctorReport is what doctor finds; its JSON form is the --json output.
type doctorReport struct {
	Home         string           `json:"hermes_home"`
	HomeFrom     string           `json:"hermes_home_from"`
	Looked       []gateway.Looked `json:"looked_at"`
	Script       string           `json:"bridge_script,omitempty"`
	ScriptFrom   string           `json:"bridge_script_from,omitempty"`
	Command      []string         `json:"command,omitempty"`
	Error        string           `json:"error,omitempty"`
	ScriptHash   string           `json:"script_hash,omitempty"`
	RuntimeHash  string           `json:"runtime_hash,omitempty"`
	RuntimeNote  string           `json:"runtime_hash_note,omitempty"`
	Stamp        *gateway.Stamp   `json:"npm_stamp,omitempty"`
	Port         int              `json:"port"`
	PortFrom     string           `json:"port_from"`
	PortHolders  []string         `json:"port_holders"`
	Session      string           `json:"session_dir"`
	SessionFrom  string           `json:"session_dir_from"`
	Paired       bool             `json:"paired"`
	Mode         string           `json:"mode"`
	ModeFrom     string           `json:"mode_from"`
	ReadReceipts bool             `json:"send_read_receipts"`
	ReceiptsFrom string           `json:"send_read_receipts_from"`
	Env          []doctorVar      `json:"environment"`
	Problems     []string         `json:"problems"`
}

// doctorVar is one variable for the bridge; a secret's value is never shown.
type doctorVar struct {
	Name  string `json:"name"`
	Value string `json:"value,omitempty"`
	From  string `json:"from"`
	// Secret says the name is a secret's; Hidden that the value is
	// withheld. Only WHATSAPP_* and HERMES_* values are shown: another
	// .env variable may hold a password, say in a database URL, and
	// doctor's output gets pasted into bug reports.
	Secret bool `json:"secret,omitempty"`
	Hidden bool `json:"hidden,omitempty"`
}

func doctorAction(c *cli.Context) error {
	if m := c.String("mode"); m != "" && m != "self-chat" && m != "bot" {
		return usageError("--mode must be self-chat or bot (got %q)", m)
	}
	in := gateway.Load(gateway.Options{HermesHome: c.String("hermes-home"), HomeFrom: "--hermes-home"})
	r := doctorReport{
		Home: in.Home, HomeFrom: in.HomeFrom, Looked: in.Looked, Script: in.Script, ScriptFrom: in.ScriptFrom,
		Port: in.Port, PortFrom: in.PortFrom, Session: in.SessionDir, SessionFrom: in.SessionFrom,
		Mode: in.Mode, ModeFrom: in.ModeFrom, ReadReceipts: in.SendReadReceipts, ReceiptsFrom: in.ReadReceiptsFrom,
		Env: []doctorVar{}, Problems: []string{}, PortHolders: []string{},
	}
	if r.Looked == nil {
		r.Looked = []gateway.Looked{}
	}
	flag := func(name string, dst *string, from *string) {
		if c.IsSet(name) {
			*dst, *from = c.String(name), "--"+name
		}
	}
	flag("bridge-script", &r.Script, &r.ScriptFrom)
	flag("session-dir", &r.Session, &r.SessionFrom)
	flag("mode", &r.Mode, &r.ModeFrom)
	if c.IsSet("port") {
		r.Port, r.PortFrom = c.Int("port"), "--port"
	}
	w := bridge.Where{Install: in, Script: c.String("bridge-script"), Node: c.String("node"), SessionDir: c.String("session-dir"), Mode: c.String("mode")}
	if c.IsSet("port") {
		w.Port = c.Int("port")
	}
	if t, err := bridge.Discover(w); err != nil {
		r.Error = flagError(err).Error()
	} else {
		r.Command = t.Command
		r.Script, r.Session = t.Script, t.SessionDir
	}
	if r.Script != "" {
		if h, err := gateway.ScriptHash(r.Script); err == nil {
			r.ScriptHash = h
		}
		if h, err := gateway.RuntimeHash(filepath.Dir(r.Script)); err == nil {
			r.RuntimeHash = h
		} else {
			r.RuntimeNote = err.Error()
		}
		st := gateway.CheckStamp(filepath.Dir(r.Script))
		r.Stamp = &st
	}
	r.Paired = bridge.Paired(r.Session)
	if holders, err := signals.PortHolders(netip.AddrFrom4([4]byte{127, 0, 0, 1}), r.Port); err == nil {
		for _, h := range holders {
			r.PortHolders = append(r.PortHolders, h.String())
		}
	}
	for _, v := range in.Env {
		dv := doctorVar{Name: v.Name, From: v.From, Secret: v.Secret, Hidden: !v.Shown()}
		if v.Shown() {
			dv.Value = v.Value
		}
		r.Env = append(r.Env, dv)
	}
	for _, p := range in.Problems {
		r.Problems = append(r.Problems, p.Error())
	}

	out := c.App.Writer
	if c.Bool("json") {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			return err
		}
	} else {
		r.print(out)
	}
	if r.Error != "" {
		return cli.Exit("wa-sidecar: "+r.Error, exitConfig)
	}
	return nil
}

func (r doctorReport) print(w io.Writer) {
	row := func(name, value, from string) {
		if from != "" {
			value += "  (" + from + ")"
		}
		fmt.Fprintf(w, "%-15s %s\n", name, value)
	}
	row("Hermes home", orDash(r.Home), r.HomeFrom)
	row("Bridge script", orDash(r.Script), r.ScriptFrom)
	for _, l := range r.Looked {
		fmt.Fprintf(w, "%-15s   looked at %s: %s\n", "", l.Path, l.Verdict)
	}
	if r.Script != "" {
		row("Script hash", orDash(r.ScriptHash), "bridge.js, as Hermes 0.18 bridges report it")
		if r.RuntimeHash != "" {
			row("Runtime hash", r.RuntimeHash, "the bridge folder's runtime files, as newer bridges report it")
		} else {
			row("Runtime hash", "none", r.RuntimeNote)
		}
	}
	if r.Stamp != nil {
		if r.Stamp.Fresh {
			row("npm stamp", "fresh", r.Stamp.Path)
		} else {
			row("npm stamp", "not fresh: the gateway would run npm install first", orDash(r.Stamp.Problem))
		}
	}
	if len(r.Command) > 0 {
		row("Command", strings.Join(r.Command, " "), "")
	}
	port := fmt.Sprint(r.Port)
	if len(r.PortHolders) == 0 {
		port += ", free"
	} else {
		port += ", in use by " + strings.Join(r.PortHolders, ", ")
	}
	row("Port", port, r.PortFrom)
	paired := "paired"
	if !r.Paired {
		paired = "not paired: run 'wa-sidecar run' on a terminal once and scan the QR code"
	}
	row("Session", orDash(r.Session)+", "+paired, r.SessionFrom)
	row("Mode", r.Mode, r.ModeFrom)
	row("Read receipts", fmt.Sprint(r.ReadReceipts), r.ReceiptsFrom)
	if len(r.Env) > 0 {
		fmt.Fprintf(w, "Environment the gateway would give the bridge (the sidecar's own environment wins):\n")
		for _, v := range r.Env {
			val := v.Value
			switch {
			case v.Secret:
				val = "(secret, not shown)"
			case v.Hidden:
				val = "(not shown)"
			}
			fmt.Fprintf(w, "  %s=%s  (%s)\n", v.Name, val, v.From)
		}
	}
	if len(r.Problems) > 0 {
		fmt.Fprintf(w, "Problems (the gateway's defaults apply instead):\n")
		for _, p := range r.Problems {
			fmt.Fprintf(w, "  %s\n", p)
		}
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
