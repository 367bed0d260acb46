package signals

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"

	"golang.org/x/sys/unix"
)

// mapping is one line of /proc/PID/maps.
type mapping struct {
	start, end uintptr
	perms      string
	dev        string // major:minor, as maps gives it
	inode      uint64
}

// ErrTraced says ReleaseExecPages did nothing because the process is being
// traced: a debugger may write breakpoints into its code at any moment.
var ErrTraced = errors.New("the process is being traced")

// ReleaseExecPages tells the kernel that the process no longer needs the
// pages of its own executable's code and read-only data it has touched so
// far (madvise MADV_DONTNEED). A Go binary touches most of its code and
// tables while it starts, and the kernel maps the 64 KiB around every page
// fault, so without this nearly the whole file stays in the resident set
// of a process that then sleeps. The pages stay in the page cache: one used
// again is mapped back by a minor fault, from memory.
//
// Only pages of private, read-only mappings of the executable that are the
// file's own are released: a page that holds a copy made on write (a
// relocation written by a dynamic loader, a debugger's breakpoint, an
// uprobe), resident or swapped out, is left where it is, and nothing is
// released while a tracer that the process's pid namespace can see is
// attached (one outside it shows as TracerPid 0; the breakpoints it has
// written are copies, and stay). The page table is read at most 512 pages
// ahead of each release, so a copy is missed only if it is made in the few
// microseconds between the two; madvise cannot be told to spare one. It
// returns how many KiB were resident in what it released.
func ReleaseExecPages() (int64, error) {
	if traced, err := tracerAttached(); err != nil {
		return 0, err
	} else if traced {
		return 0, ErrTraced
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, fmt.Errorf("reading the process's mappings: %w", err)
	}
	maps, err := readMaps(f)
	f.Close()
	if err != nil {
		return 0, fmt.Errorf("reading the process's mappings: %w", err)
	}
	pagemap, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return 0, fmt.Errorf("reading the process's page table: %w", err)
	}
	defer pagemap.Close()
	var pages int64
	for _, m := range execMappings(maps, reflect.ValueOf(ReleaseExecPages).Pointer()) {
		n, err := releaseFilePages(pagemap, m, dontNeed)
		pages += n
		if err != nil {
			return pages * int64(os.Getpagesize()) / 1024, err
		}
	}
	return pages * int64(os.Getpagesize()) / 1024, nil
}

func dontNeed(start, end uintptr) error {
	if _, _, errno := unix.Syscall(unix.SYS_MADVISE, start, end-start, unix.MADV_DONTNEED); errno != 0 {
		return fmt.Errorf("releasing %#x-%#x: %w", start, end, errno)
	}
	return nil
}

// tracerAttached reads TracerPid from /proc/self/status.
func tracerAttached() (bool, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false, fmt.Errorf("reading the process's status: %w", err)
	}
	for line := range bytes.Lines(b) {
		if v, ok := bytes.CutPrefix(line, []byte("TracerPid:")); ok {
			return string(bytes.TrimSpace(v)) != "0", nil
		}
	}
	return false, errors.New("reading the process's status: no TracerPid line")
}

// The flags of a /proc/PID/pagemap entry (see the kernel's
// Documentation/admin-guide/mm/pagemap.rst); they are given to every user,
// the frame numbers only to root.
const (
	pagePresent = 1 << 63
	pageSwapped = 1 << 62
	pageFile    = 1 << 61 // a page of a file, or shared anonymous memory
)

// releaseFilePages reads m's page table 512 entries at a time and, right
// after each read, hands release every run of those pages that holds no
// copy (present but not a file page, or swapped out) and has a resident
// page in it. It returns how many resident pages the runs it released held.
func releaseFilePages(pagemap io.ReaderAt, m mapping, release func(start, end uintptr) error) (int64, error) {
	page := uintptr(os.Getpagesize())
	buf := make([]byte, 8*512)
	var released int64
	for addr := m.start; addr < m.end; {
		n := min(uintptr(len(buf)/8), (m.end-addr)/page)
		if n == 0 {
			break // a mapping's end is page-aligned; this is only a guard
		}
		got, err := pagemap.ReadAt(buf[:8*n], int64(addr/page*8))
		if uintptr(got) < 8*n {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return released, fmt.Errorf("reading the process's page table: %w", err)
		}
		var runStart uintptr
		var runResident int64
		inRun := false
		flush := func(end uintptr) error {
			if inRun && runResident > 0 {
				if err := release(runStart, end); err != nil {
					return err
				}
				released += runResident
			}
			inRun, runResident = false, 0
			return nil
		}
		for i := uintptr(0); i < n; i++ {
			e := binary.NativeEndian.Uint64(buf[8*i:])
			at := addr + i*page
			if e&pageSwapped != 0 || e&pagePresent != 0 && e&pageFile == 0 {
				if err := flush(at); err != nil {
					return released, err
				}
				continue
			}
			if !inRun {
				inRun, runStart = true, at
			}
			if e&pagePresent != 0 {
				runResident++
			}
		}
		if err := flush(addr + n*page); err != nil {
			return released, err
		}
		addr += n * page
	}
	return released, nil
}

// execMappings picks, of maps, the private, read-only mappings of the file
// whose mapping holds the code address pc: the executable's, found by
// address rather than by path (on overlayfs, a container's usual root, the
// device maps gives is the lower layer's, not the one stat gives).
func execMappings(maps []mapping, pc uintptr) []mapping {
	var exe *mapping
	for i := range maps {
		if maps[i].start <= pc && pc < maps[i].end {
			exe = &maps[i]
			break
		}
	}
	if exe == nil || exe.inode == 0 {
		return nil
	}
	var out []mapping
	for _, m := range maps {
		if m.dev != exe.dev || m.inode != exe.inode {
			continue
		}
		if len(m.perms) != 4 || m.perms[0] != 'r' || m.perms[1] != '-' || m.perms[3] != 'p' {
			continue
		}
		out = append(out, m)
	}
	return out
}

// errMaps says /proc/PID/maps held a line that is not what it should be.
var errMaps = errors.New("unexpected line")

// readMaps reads /proc/PID/maps: start-end perms offset major:minor inode
// [path] on each line.
func readMaps(r io.Reader) ([]mapping, error) {
	var maps []mapping
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64*1024)
	for sc.Scan() {
		fields := bytes.Fields(sc.Bytes())
		if len(fields) == 0 {
			continue
		}
		m, err := mapsLine(fields)
		if err != nil {
			return nil, fmt.Errorf("%w: %q", err, sc.Text())
		}
		maps = append(maps, m)
	}
	return maps, sc.Err()
}

func mapsLine(fields [][]byte) (mapping, error) {
	if len(fields) < 5 {
		return mapping{}, errMaps
	}
	lo, hi, ok := bytes.Cut(fields[0], []byte("-"))
	if !ok {
		return mapping{}, errMaps
	}
	start, err1 := strconv.ParseUint(string(lo), 16, 64)
	end, err2 := strconv.ParseUint(string(hi), 16, 64)
	inode, err3 := strconv.ParseUint(string(fields[4]), 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || end <= start {
		return mapping{}, errMaps
	}
	return mapping{start: uintptr(start), end: uintptr(end), perms: string(fields[1]), dev: string(fields[3]), inode: inode}, nil
}
