package gateway

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// Size bounds for what this package reads. The gateway's files are small;
// a bound keeps a mistaken path (a log, a device) from filling memory.
const (
	configLimit = 1 << 20 // config.yaml and .env
	inputLimit  = 4 << 20 // each bridge file that is hashed
	stampLimit  = 4 << 10 // node_modules/.hermes-pkg-hash
)

// readFlags say how readRegular treats a file.
type readFlags uint8

const (
	// followLinks opens what a symbolic link leads to, as Python's open
	// does. Without it a link is refused, as newer gateways refuse one
	// among the bridge's hashed files and its npm stamp.
	followLinks readFlags = 1 << iota
	// private refuses a file that every user may write: its content
	// could come from anyone.
	private
)

// readRegular reads a regular file of at most limit bytes. What is judged
// is the file finally opened (through the link, with followLinks): its
// kind, its size and, with private, its mode. A missing file, or a link
// that leads nowhere, is fs.ErrNotExist, which callers judge for
// themselves.
func readRegular(path string, limit int64, flags readFlags) ([]byte, error) {
	// O_NONBLOCK keeps the open from waiting on a FIFO; it is refused
	// below as not a regular file anyway.
	oflags := unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NONBLOCK
	if flags&followLinks == 0 {
		oflags |= unix.O_NOFOLLOW
	}
	fd, err := unix.Open(path, oflags, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil, fs.ErrNotExist
	case errors.Is(err, unix.ELOOP) && flags&followLinks != 0:
		return nil, errors.New("cannot be opened: it leads through symbolic links that loop, or through too many of them")
	case errors.Is(err, unix.ELOOP):
		return nil, errors.New("is a symbolic link, which newer gateways refuse here; put the file itself in its place")
	case err != nil:
		return nil, fmt.Errorf("cannot be opened: %w", err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("cannot be inspected: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("is not a regular file (%s)", fileKind(st.Mode()))
	}
	// The mode is that of the opened file (fstat), not of a link to it.
	if flags&private != 0 && st.Mode().Perm()&0o002 != 0 {
		return nil, fmt.Errorf("is writable by every user, so it is not read; fix it with chmod o-w %s", path)
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("is larger than %s", sizeText(limit))
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("cannot be read: %w", err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("is larger than %s", sizeText(limit))
	}
	return data, nil
}

func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	default:
		return "mode " + m.String()
	}
}

func sizeText(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	default:
		return fmt.Sprintf("%d bytes", n)
	}
}
