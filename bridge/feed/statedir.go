package feed

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/wa-sidecar/wa-sidecar/internal/privdir"
)

// HeldStateDir is a state directory a server holds for its life: created
// and checked, then locked, so that no second server writes its token or
// discovery file there while this one runs. The order is the protocol the
// client commands rely on: nothing is written until the lock is held, the
// discovery file is published last (once the server is bound and its
// token is in place), and it is removed on release only if it is still
// this process's.
type HeldStateDir struct {
	path      string
	lock      *StateLock
	pid       int
	published bool
}

// HoldStateDir creates dir (mode 0700) if it is missing, checks that no
// other user can change it (as OpenStateDir does) and takes its lock. A
// directory another process holds gives a *StateDirHeldError; one that is
// not safe to trust, a *privdir.UnsafeError.
func HoldStateDir(dir string) (*HeldStateDir, error) {
	d, err := privdir.Open(dir, true)
	if err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	// The lock goes into the directory just checked, not one found by
	// walking its path again.
	defer d.Close()
	lock, err := lockIn(d)
	if err != nil {
		return nil, err
	}
	return &HeldStateDir{path: dir, lock: lock, pid: os.Getpid()}, nil
}

// Path is the state directory, as HoldStateDir was given it.
func (h *HeldStateDir) Path() string { return h.path }

// Publish leaves the discovery file d for the client commands, as this
// process's (its Pid is set to this process's) and, if d.StartedAt is
// zero, started now. Call it once the server listens at d.Listen and the
// token is in place.
func (h *HeldStateDir) Publish(d Discovery) error {
	h.published = true
	d.Pid = h.pid
	if d.StartedAt.IsZero() {
		d.StartedAt = time.Now()
	}
	return WriteDiscovery(h.path, d)
}

// Release removes the discovery file if this process published it and it
// is still this process's, so a newer server's survives, then releases
// the lock. It always releases the lock, and reports what failed.
func (h *HeldStateDir) Release() error {
	var errs []error
	if h.published {
		if err := RemoveDiscovery(h.path, h.pid); err != nil {
			errs = append(errs, fmt.Errorf("remove the discovery file: %w", err))
		}
	}
	if err := h.lock.Unlock(); err != nil {
		errs = append(errs, fmt.Errorf("release the state directory's lock: %w", err))
	}
	return errors.Join(errs...)
}
