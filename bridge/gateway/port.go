package gateway

import "fmt"

// MaxPort is the highest TCP port number.
const MaxPort = 65535

// PortError says a number given as the bridge's port is not a TCP port.
type PortError struct {
	Port int
}

func (e *PortError) Error() string {
	return fmt.Sprintf("port must be between 1 and %d (got %d)", MaxPort, e.Port)
}

// CheckPort returns a *PortError unless port is a TCP port a bridge can
// listen on, from 1 to MaxPort. It is the one check of a port number: the
// gateway's config, the bridge's command line and the sidecar's flags all
// go through it.
func CheckPort(port int) error {
	if port < 1 || port > MaxPort {
		return &PortError{Port: port}
	}
	return nil
}
