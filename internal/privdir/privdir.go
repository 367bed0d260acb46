// Package privdir keeps a program's own files in a directory that no other
// user can change, and never reaches them through a link someone planted.
//
// A Dir is an open directory: it is found without following a symbolic
// link that neither this user nor root owns (in one openat2 call that
// refuses every link when the path has none, else by walking the path one
// component at a time), and is then checked as opened (its owner and mode,
// read from the descriptor), so renaming things around it later changes
// nothing. Every file is opened relative to that descriptor with
// O_NOFOLLOW and checked again after opening: a regular file, owned by
// this user or root, with one link and not writable by others. Files are
// replaced through a temporary file and a rename, which replaces a link
// rather than writing through it.
package privdir

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// UnsafeError says a directory or file is not safe to trust: another user
// could change it, or it is not the kind of file it should be.
type UnsafeError struct {
	Path    string
	Problem string // what is wrong, e.g. "is writable by other users (mode 0777)"
	Fix     string // what to do about it, e.g. "chmod go-w /srv/state"
}

func (e *UnsafeError) Error() string {
	return fmt.Sprintf("%s %s; %s", e.Path, e.Problem, e.Fix)
}

// Dir is an open private directory. Its methods take a file's bare name,
// never a path.
type Dir struct {
	path string
	fd   int
}

// maxLinks bounds the symbolic links one walk follows, as the kernel does.
const maxLinks = 40

// Open opens the directory at path and checks that it is private: owned by
// this user (or root) and writable by no one else. With create, missing
// directories are made, mode 0700. The path may go through symbolic links
// owned by this user or root; a link another user owns is refused, since
// they could point it anywhere.
func Open(path string, create bool) (*Dir, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	fd, err := walk(abs, create)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "fstat", Path: abs, Err: err}
	}
	if err := checkDir(abs, &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &Dir{path: abs, fd: fd}, nil
}

// walk resolves abs component by component and returns a descriptor of
// the directory it names, opened for reading.
func walk(abs string, create bool) (int, error) {
	if fd, ok := openWithoutLinks(abs); ok {
		return fd, nil
	}
	return walkLinks(abs, create)
}

// walkLinks is walk one component at a time, following the links it may.
func walkLinks(abs string, create bool) (int, error) {
	for links := 0; ; links++ {
		if links > maxLinks {
			return -1, &os.PathError{Op: "open", Path: abs, Err: unix.ELOOP}
		}
		fd, next, err := walkTo(abs, create)
		if err != nil || next == "" {
			return fd, err
		}
		abs = next
	}
}

// openWithoutLinks opens the directory abs in one openat2 call that
// refuses every symbolic link on the way (RESOLVE_NO_SYMLINKS, Linux 5.6).
// A path without links resolves as walkTo would resolve it, with one
// system call instead of three for each component; any failure (a link on
// the way, a missing directory, a kernel or seccomp filter without
// openat2) leaves the path to walkTo, which follows the links it trusts,
// creates what is missing and says what is wrong.
func openWithoutLinks(abs string) (int, bool) {
	// "/." as the walk's last step opens ".": that needs the right to
	// search the directory itself, as the walk does, not only its parent.
	fd, err := unix.Openat2(unix.AT_FDCWD, strings.TrimSuffix(abs, "/")+"/.", &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	return fd, err == nil
}

// walkTo walks abs up to its first symbolic link and returns the path
// that link leads to, or, when there is none, the directory abs names.
func walkTo(abs string, create bool) (dirfd int, next string, err error) {
	fd, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, "", &os.PathError{Op: "open", Path: "/", Err: err}
	}
	defer func() { unix.Close(fd) }()
	parts := strings.Split(strings.TrimPrefix(filepath.Clean(abs), "/"), "/")
	cur := "/"
	for i, name := range parts {
		if name == "" {
			continue
		}
		at := filepath.Join(cur, name)
		nfd, err := unix.Openat(fd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) && create {
			if err = unix.Mkdirat(fd, name, 0o700); err == nil || errors.Is(err, unix.EEXIST) {
				nfd, err = unix.Openat(fd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			}
		}
		if err != nil {
			return -1, "", &os.PathError{Op: "open", Path: at, Err: err}
		}
		unix.Close(fd)
		fd = nfd
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return -1, "", &os.PathError{Op: "fstat", Path: at, Err: err}
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			cur = at
		case unix.S_IFLNK:
			if int(st.Uid) != os.Geteuid() && st.Uid != 0 {
				return -1, "", &UnsafeError{Path: at, Problem: fmt.Sprintf("is a symbolic link owned by %s, who could point it anywhere", owner(st.Uid)),
					Fix: "use the real path instead, or remove the link"}
			}
			target, err := readlink(fd)
			if err != nil {
				return -1, "", &os.PathError{Op: "readlink", Path: at, Err: err}
			}
			// Everything up to cur is resolved, so a lexical join is exact.
			if !filepath.IsAbs(target) {
				target = filepath.Join(cur, target)
			}
			return -1, filepath.Join(append([]string{target}, parts[i+1:]...)...), nil
		default:
			return -1, "", &os.PathError{Op: "open", Path: at, Err: unix.ENOTDIR}
		}
	}
	dfd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, "", &os.PathError{Op: "open", Path: cur, Err: err}
	}
	return dfd, "", nil
}

func readlink(fd int) (string, error) {
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(fd, "", buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// checkDir applies the rules for a directory of private files.
func checkDir(path string, st *unix.Stat_t) error {
	if int(st.Uid) != os.Geteuid() && st.Uid != 0 {
		return &UnsafeError{Path: path, Problem: fmt.Sprintf("is owned by %s, not by %s who runs wa-sidecar", owner(st.Uid), owner(uint32(os.Geteuid()))),
			Fix: fmt.Sprintf("run wa-sidecar as its owner, or give it to this user (chown %d %s)", os.Geteuid(), path)}
	}
	if writableByOthers(st) {
		return &UnsafeError{Path: path, Problem: fmt.Sprintf("is writable by other users (mode %04o)", st.Mode&0o7777),
			Fix: "chmod go-w " + path}
	}
	return nil
}

// writableByOthers says someone besides the owner may write: anyone, or a
// group that is not the owner's own.
func writableByOthers(st *unix.Stat_t) bool {
	return st.Mode&0o002 != 0 || (st.Mode&0o020 != 0 && !privateGroup(st.Gid))
}

// privateGroup says gid is this user's own group, one that bears its
// name, as with user-private groups or a pod's fsGroup of the image's
// user: its members are this user alone, so its write bit opens nothing.
func privateGroup(gid uint32) bool {
	if int(gid) != os.Getegid() {
		return false
	}
	u, err := user.LookupId(strconv.Itoa(os.Geteuid()))
	if err != nil {
		return false
	}
	g, err := user.LookupGroupId(strconv.FormatUint(uint64(gid), 10))
	return err == nil && g.Name == u.Username
}

func owner(uid uint32) string {
	s := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(s); err == nil {
		return fmt.Sprintf("uid %s (%s)", s, u.Username)
	}
	return "uid " + s
}

// Path is the directory's absolute path as given to Open.
func (d *Dir) Path() string { return d.path }

// Close closes the directory's descriptor.
func (d *Dir) Close() error { return unix.Close(d.fd) }

func (d *Dir) join(name string) string { return filepath.Join(d.path, name) }

func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return fmt.Errorf("privdir: %q is not a file name", name)
	}
	return nil
}

// OpenFile opens name in d with flag (os.O_* values) and, when it creates
// the file, perm; it never follows a symbolic link. The file must turn out
// to be a regular file owned by this user or root, with one link and not
// writable by others (as for directories, the user's own group does not
// count); anything else is an *UnsafeError, and the file is
// closed untouched (flag must not hold O_TRUNC, which would act first).
func (d *Dir) OpenFile(name string, flag int, perm os.FileMode) (*os.File, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	if flag&os.O_TRUNC != 0 {
		return nil, errors.New("privdir: O_TRUNC would truncate before the file is checked")
	}
	path := d.join(name)
	// O_NONBLOCK: a planted FIFO must not block the open.
	fd, err := unix.Openat(d.fd, name, flag|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK|unix.O_NOCTTY, uint32(perm.Perm()))
	if errors.Is(err, unix.ELOOP) {
		return nil, &UnsafeError{Path: path, Problem: "is a symbolic link", Fix: "remove it: wa-sidecar never writes or reads its files through a link"}
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	if err := checkFile(path, &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "fcntl", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

func checkFile(path string, st *unix.Stat_t) error {
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return &UnsafeError{Path: path, Problem: "is not a regular file", Fix: "remove it"}
	case int(st.Uid) != os.Geteuid() && st.Uid != 0:
		return &UnsafeError{Path: path, Problem: "is owned by " + owner(st.Uid), Fix: "remove it"}
	case st.Nlink != 1:
		return &UnsafeError{Path: path, Problem: fmt.Sprintf("has %d hard links, so it may be another file's", st.Nlink), Fix: "remove it"}
	case writableByOthers(st):
		return &UnsafeError{Path: path, Problem: fmt.Sprintf("is writable by other users (mode %04o)", st.Mode&0o7777), Fix: "remove it, or chmod go-w " + path}
	}
	return nil
}

// ReadFile reads name from d, as OpenFile checks it, failing if it holds
// more than max bytes.
func (d *Dir) ReadFile(name string, max int64) ([]byte, error) {
	f, err := d.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", d.join(name), max)
	}
	return b, nil
}

// WriteFile replaces name in d with data, mode perm: through a temporary
// file and a rename, so a reader sees the old file or the new one, and a
// link at name is replaced, never followed. The data and then the rename
// are flushed to disk before it returns, so a crash or a power cut at any
// moment leaves the old file or the new one, never a torn or empty one.
func (d *Dir) WriteFile(name string, data []byte, perm os.FileMode) error {
	if err := checkName(name); err != nil {
		return err
	}
	var r [8]byte
	if _, err := rand.Read(r[:]); err != nil {
		return err
	}
	tmp := "." + name + ".tmp-" + hex.EncodeToString(r[:])
	fd, err := unix.Openat(d.fd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "create", Path: d.join(tmp), Err: err}
	}
	f := os.NewFile(uintptr(fd), d.join(tmp))
	ok := false
	defer func() {
		if !ok {
			f.Close()
			unix.Unlinkat(d.fd, tmp, 0)
		}
	}()
	if err := f.Chmod(perm.Perm()); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := unix.Renameat(d.fd, tmp, d.fd, name); err != nil {
		unix.Unlinkat(d.fd, tmp, 0)
		ok = true
		return &os.LinkError{Op: "rename", Old: d.join(tmp), New: d.join(name), Err: err}
	}
	ok = true
	if err := unix.Fsync(d.fd); err != nil {
		return &os.PathError{Op: "fsync", Path: d.path, Err: err}
	}
	return nil
}

// WriteFile replaces the file at path with data, mode perm, as
// Dir.WriteFile does, in a directory the caller chose that need not be
// private (a systemd unit directory, the bridge's install): atomically and
// durably, and a link at path is replaced, never written through.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	d := &Dir{path: dir, fd: fd}
	defer d.Close()
	return d.WriteFile(filepath.Base(path), data, perm)
}

// Remove removes name from d; a link is removed, not its target.
func (d *Dir) Remove(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if err := unix.Unlinkat(d.fd, name, 0); err != nil {
		return &os.PathError{Op: "remove", Path: d.join(name), Err: err}
	}
	return nil
}

// Rename renames oldname to newname within d.
func (d *Dir) Rename(oldname, newname string) error {
	if err := checkName(oldname); err != nil {
		return err
	}
	if err := checkName(newname); err != nil {
		return err
	}
	if err := unix.Renameat(d.fd, oldname, d.fd, newname); err != nil {
		return &os.LinkError{Op: "rename", Old: d.join(oldname), New: d.join(newname), Err: err}
	}
	return nil
}

// RenameNoReplace renames oldname to newname, both in d, and fails with
// an error that wraps EEXIST if newname exists, which it leaves alone.
func (d *Dir) RenameNoReplace(oldname, newname string) error {
	if err := checkName(oldname); err != nil {
		return err
	}
	if err := checkName(newname); err != nil {
		return err
	}
	err := unix.Renameat2(d.fd, oldname, d.fd, newname, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) {
		// A kernel or file system without the flag: the same, but not
		// atomic against another process creating newname meanwhile.
		var st unix.Stat_t
		if err = unix.Fstatat(d.fd, newname, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil {
			err = unix.EEXIST
		} else if errors.Is(err, unix.ENOENT) {
			err = unix.Renameat(d.fd, oldname, d.fd, newname)
		}
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: d.join(oldname), New: d.join(newname), Err: err}
	}
	return nil
}

// Lstat describes name in d without following a link.
func (d *Dir) Lstat(name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	if err := checkName(name); err != nil {
		return st, err
	}
	if err := unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return st, &os.PathError{Op: "lstat", Path: d.join(name), Err: err}
	}
	return st, nil
}

// Names lists the names in d.
func (d *Dir) Names() ([]string, error) {
	fd, err := unix.Openat(d.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: d.path, Err: err}
	}
	f := os.NewFile(uintptr(fd), d.path)
	defer f.Close()
	return f.Readdirnames(-1)
}

// ReadRegularFile reads a file that a user named, such as a flag's, which
// may be reached through links: it must be a regular file of at most max
// bytes. A FIFO or a device named by mistake gets an error at once instead
// of blocking the open, or a read that never ends (/dev/zero).
func ReadRegularFile(path string, max int64) ([]byte, error) {
	return ReadRegularFileChecked(path, max, nil)
}

// ReadRegularFileChecked is ReadRegularFile with one more check, if check
// is not nil, of the opened file's status before anything is read.
func ReadRegularFileChecked(path string, max int64, check func(st *unix.Stat_t) error) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, &UnsafeError{Path: path, Problem: "is not a regular file", Fix: "name a regular file"}
	}
	if check != nil {
		if err := check(&st); err != nil {
			return nil, err
		}
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, max)
	}
	return b, nil
}
