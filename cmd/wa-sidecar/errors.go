package main

import (
	"errors"
	"fmt"

	"github.com/wa-sidecar/wa-sidecar/bridge/gateway"
)

// flagError says which flag to change for an error of a lower layer,
// which knows its settings only by their own names: the flags are named
// here alone. An error that no flag can fix comes back as it was.
func flagError(err error) error {
	var port *gateway.PortError
	switch {
	case errors.As(err, &port):
		return fmt.Errorf("--port must be between 1 and %d (got %d)", gateway.MaxPort, port.Port)
	}
	return err
}
