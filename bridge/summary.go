package bridge

import (
	"encoding/json"
	"fmt"

	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// Summary is how the bridge's status is read aloud, in systemd's STATUS=,
// the status server's /readyz and a client's status alike: the monitor's
// line, with what this package knows of why a running bridge is not ready.
// startHint is how to start a stopped bridge again, in the words of the
// caller, who knows its commands.
func Summary(startHint string) procmon.Summary {
	return procmon.Summary{Name: "bridge", NotReady: NotReadyReason, StartHint: startHint}
}

// NotReadyReason says why a running bridge is not ready, from
// details.whatsapp: the gateway's first reason not to adopt it, else its
// connection; "" when the details do not say. It reads the details as
// this package keeps them and as a client decodes them from JSON.
func NotReadyReason(st procmon.Status) string {
	d, ok := detailsOf(st)
	// An event's snapshot can come before this layer has heard of a new
	// child: an old child's details are not this one's.
	if !ok || d.BridgePid != st.Pid {
		return ""
	}
	if a := d.Adoption; a != nil && !a.Adoptable && len(a.Reasons) > 0 {
		why := "the gateway would not adopt it: " + a.Reasons[0].Message
		if n := len(a.Reasons) - 1; n > 0 {
			why += fmt.Sprintf(" (and %d more)", n)
		}
		return why
	}
	switch d.Connection {
	case ConnectionPairing:
		if d.QRCodes > 0 {
			return fmt.Sprintf("pairing, %d QR code%s shown", d.QRCodes, map[bool]string{true: "s"}[d.QRCodes != 1])
		}
		return "pairing"
	case ConnectionDisconnected:
		return "not connected to WhatsApp"
	}
	return ""
}

// detailsOf is details.whatsapp of st, kept by this package or decoded
// from JSON into a map.
func detailsOf(st procmon.Status) (Details, bool) {
	switch v := st.Details[DetailsKey].(type) {
	case Details:
		return v, true
	case nil:
		return Details{}, false
	default:
		b, err := json.Marshal(v)
		var d Details
		if err != nil || json.Unmarshal(b, &d) != nil {
			return Details{}, false
		}
		return d, true
	}
}
