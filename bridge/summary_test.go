package bridge

import (
	"testing"

	"github.com/wa-sidecar/wa-sidecar/procmon"
)

func TestNotReadyReasonFromTheConnection(t *testing.T) {
	for _, tt := range []struct {
		name    string
		details any
		want    string
	}{
		{"pairing", Details{Connection: ConnectionPairing, QRCodes: 2, BridgePid: 7}, "pairing, 2 QR codes shown"},
		{"one QR code", Details{Connection: ConnectionPairing, QRCodes: 1, BridgePid: 7}, "pairing, 1 QR code shown"},
		{"disconnected", Details{Connection: ConnectionDisconnected, BridgePid: 7}, "not connected to WhatsApp"},
		{"as decoded from JSON", map[string]any{"connection": "disconnected", "bridge_pid": 7.0}, "not connected to WhatsApp"},
		{"an old child's", Details{Connection: ConnectionDisconnected, BridgePid: 6}, ""},
		{"connected", Details{Connection: ConnectionConnected, BridgePid: 7}, ""},
		{"none", nil, ""},
	} {
		st := procmon.Status{State: procmon.StateRunning, Pid: 7, Details: map[string]any{DetailsKey: tt.details}}
		if got := NotReadyReason(st); got != tt.want {
			t.Errorf("%s: NotReadyReason = %q; want %q", tt.name, got, tt.want)
		}
	}
	st := procmon.Status{State: procmon.StateRunning, Pid: 7, Details: map[string]any{DetailsKey: Details{Connection: ConnectionDisconnected, BridgePid: 7}}}
	if got, want := Summary("").Line(st, st.Since), "bridge running (pid 7), not ready: not connected to WhatsApp"; got != want {
		t.Errorf("Summary: %q; want %q", got, want)
	}
}
