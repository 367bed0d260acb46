// Package gateway knows what the Hermes gateway would do with its WhatsApp
// bridge on this machine: which bridge files it would run, on which port
// and session, with which environment, and what it checks before it adopts
// a bridge that is already running.
//
// It reads a Hermes home as the Hermes installer lays it out:
//
//	<home>/config.yaml
//	<home>/.env
//	<home>/hermes-agent/scripts/whatsapp-bridge/bridge.js   (the user install)
//	<home>/scripts/whatsapp-bridge/bridge.js                (the mirror of a read-only install)
//	<home>/platforms/whatsapp/session/creds.json
//
// It only reads: it starts no process and opens no connection. Nothing in a
// Hermes home makes it fail; what it cannot read or use is reported as a
// Problem with the file and line, and the gateway's defaults apply.
package gateway
