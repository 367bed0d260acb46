// Package echo shows the bridge's output on the sidecar's own stdout and
// stderr: as records of the sidecar's log (Log), as lines for a person at
// a terminal (Terminal), or as the bridge wrote it (Raw). Lines that carry
// a pairing code never reach a log: whoever reads the journal or 'docker
// logs' could link their phone to the account.
package echo

import (
	"github.com/wa-sidecar/wa-sidecar/bridge"
)

// pairingLine reports whether a line of the bridge's output carries a
// pairing code, which must stay out of every log: whoever reads the
// journal or 'docker logs' could link their phone to the account. The
// hermes layer logs one record for each code instead, saying how to see
// it.
func pairingLine(text []byte) bool {
	return len(text) > 0 && bridge.MayStartPairingCode(text[0]) && bridge.CarriesPairingCode(text)
}
