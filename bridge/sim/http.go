package sim

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// scriptHash stands in for the hash of bridge.js the real bridge reports:
// 16 hex digits that change only with the simulator itself.
var scriptHash = func() string {
	sum := sha256.Sum256([]byte("wa-sidecar simulated bridge, contract of 2025"))
	return hex.EncodeToString(sum[:8])
}()

// truthy is the real bridge's reading of a yes/no variable: 1, true, yes
// or on, in any case; anything else (or unset) is no.
func truthy(v string) bool {
	switch strings.ToLower(v) {
	case "1", "true", "yes", "on":
		return true
	}
	return false
}

// Health is the body of GET /health, field for field the real bridge's.
type Health struct {
	Status           string  `json:"status"`
	QueueLength      int     `json:"queueLength"`
	Uptime           float64 `json:"uptime"`
	ScriptHash       string  `json:"scriptHash"`
	SendReadReceipts bool    `json:"sendReadReceipts"`
}

func (b *bridge) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", b.health)
	mux.HandleFunc("GET /messages", b.whenConnected(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, []any{})
	}))
	for _, p := range []string{"/send", "/edit", "/send-media", "/send-poll", "/send-location", "/typing", "/read"} {
		mux.HandleFunc("POST "+p, b.whenConnected(func(w http.ResponseWriter, _ *http.Request) {
			writeJSON(w, http.StatusOK, map[string]any{"success": true, "simulated": true})
		}))
	}
	return localOnly(mux)
}

// localOnly answers 400 to requests whose Host is not this machine, as the
// real bridge does against DNS rebinding.
func localOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		switch host {
		case "localhost", "127.0.0.1", "::1", "[::1]":
			next.ServeHTTP(w, r)
		default:
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "Invalid Host header"})
		}
	})
}

func (b *bridge) health(w http.ResponseWriter, r *http.Request) {
	if b.cfg.HealthHang {
		// A wedged event loop: the connection is accepted, nothing comes back.
		<-r.Context().Done()
		return
	}
	status := "disconnected"
	if b.isConnected() {
		status = "connected"
	}
	writeJSON(w, http.StatusOK, Health{
		Status:           status,
		Uptime:           float64(time.Since(b.started).Milliseconds()) / 1000,
		ScriptHash:       b.scriptHash,
		SendReadReceipts: truthy(os.Getenv("WHATSAPP_SEND_READ_RECEIPTS")),
	})
}

func (b *bridge) whenConnected(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !b.isConnected() {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "Not connected to WhatsApp"})
			return
		}
		h(w, r)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
