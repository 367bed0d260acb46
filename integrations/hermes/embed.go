// Package hermes holds the wa-sidecar plugin for the Hermes gateway, so the
// wa-sidecar binary can install the very files this repository tests.
package hermes

import "embed"

// PluginName is the plugin's directory under $HERMES_HOME/plugins and its
// key in the gateway's plugins.enabled list.
const PluginName = "wa-sidecar-whatsapp"

// Plugin holds the plugin's files, under the directory "plugin". They are
// named one by one so that a local __pycache__ is never embedded.
//
//go:embed plugin/__init__.py plugin/adapter.py plugin/sidecar.py plugin/plugin.yaml
var Plugin embed.FS
