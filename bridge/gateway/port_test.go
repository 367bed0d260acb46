package gateway

import (
	"errors"
	"testing"
)

func TestCheckPort(t *testing.T) {
	for _, p := range []int{1, 3000, MaxPort} {
		if err := CheckPort(p); err != nil {
			t.Errorf("CheckPort(%d) = %v", p, err)
		}
	}
	for _, p := range []int{0, -1, MaxPort + 1, 1 << 40} {
		err := CheckPort(p)
		var pe *PortError
		if !errors.As(err, &pe) || pe.Port != p {
			t.Errorf("CheckPort(%d) = %v, want a *PortError naming it", p, err)
		}
	}
	if got, want := CheckPort(0).Error(), "port must be between 1 and 65535 (got 0)"; got != want {
		t.Errorf("message %q, want %q", got, want)
	}
}
