// Package feed tells the gateway, and the people operating it, how the
// bridge is doing as it changes: a websocket of ordered events with a
// snapshot, HTTP probes, control ops guarded by a token, and a push mode
// that dials the gateway instead. docs/protocol.md describes the wire
// protocol; this package is its server and a small client.
package feed
