package gatewaymodel

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// probeTimeout is the gateway's total timeout for one GET /health.
const probeTimeout = 2 * time.Second

// probe asks GET /health on a fresh connection. ok is an HTTP 200; data is
// its body when that is a JSON object, as the gateway decodes it, else nil.
// err is a connection error or timeout.
func (g *Gateway) probe(ctx context.Context) (ok bool, data map[string]any, err error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	resp, err := g.get(ctx, g.probes, "/health")
	if err != nil {
		return false, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, nil, nil
	}
	v, err := decodeJSON(resp)
	if err != nil {
		return true, nil, nil
	}
	data, _ = v.(map[string]any)
	return true, data, nil
}

func (g *Gateway) get(ctx context.Context, tr *http.Transport, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.url(path), nil)
	if err != nil {
		return nil, err
	}
	return (&http.Client{Transport: tr}).Do(req)
}

// jsonType is the media types aiohttp's json() accepts without complaint.
var jsonType = regexp.MustCompile(`^application/(?:[\w.+-]+?\+)?json`)

// errNotJSON is a body the gateway's HTTP client refuses to decode.
var errNotJSON = errors.New("not a JSON response")

// decodeJSON reads a body as aiohttp's json() does: the Content-Type must
// be JSON (missing counts as application/octet-stream), and an empty body
// is null. Numbers stay json.Numbers so Python's truth rules apply to them.
func decodeJSON(resp *http.Response) (any, error) {
	ct := resp.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if ct == "" || err != nil {
		mt = "application/octet-stream"
	}
	if !jsonType.MatchString(strings.ToLower(mt)) {
		return nil, fmt.Errorf("%w: Content-Type %q", errNotJSON, ct)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: data after the JSON value", errNotJSON)
	}
	return v, nil
}

// truthy is Python's bool() of a decoded JSON value.
func truthy(v any) bool {
	switch v := v.(type) {
	case nil:
		return false
	case bool:
		return v
	case json.Number:
		f, _ := strconv.ParseFloat(string(v), 64)
		return f != 0
	case string:
		return v != ""
	case []any:
		return len(v) > 0
	case map[string]any:
		return len(v) > 0
	}
	return true
}

// pyStr is roughly Python's str() of a decoded JSON value, for messages.
func pyStr(v any) string {
	switch v := v.(type) {
	case nil:
		return "None"
	case bool:
		if v {
			return "True"
		}
		return "False"
	case string:
		return v
	case json.Number:
		return string(v)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// npmWouldInstall is the gateway's dependency check: it installs unless
// node_modules exists and its .hermes-pkg-hash stamp holds package.json's
// content hash. The newer gateway reads the stamp BOM-tolerantly.
func npmWouldInstall(bridgeDir string, newer bool) bool {
	pkg := ContentHash(filepath.Join(bridgeDir, "package.json"))
	if _, err := os.Stat(filepath.Join(bridgeDir, "node_modules")); err != nil {
		return true
	}
	b, err := os.ReadFile(filepath.Join(bridgeDir, "node_modules", ".hermes-pkg-hash"))
	if err != nil {
		return true
	}
	if newer {
		b = bytes.TrimPrefix(b, []byte("\uFEFF"))
	}
	return pkg == "" || strings.TrimSpace(string(b)) != pkg
}
