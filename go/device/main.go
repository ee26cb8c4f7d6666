// Command edge-go-device is a test peer that behaves like the Go devices in
// the field: it dials the relay with gorilla/websocket, runs a
// hashicorp/yamux *server* session over the WebSocket byte stream, and
// serves HTTP on the streams the relay opens (http.Serve over the session,
// each stream wrapped so a read deadline interrupts a pending Read: see
// deadlineListener). It exposes the same test endpoints as the Rust sim-box.
// With -listen ADDR it dials nothing and serves them with plain net/http
// instead: a Go box that edge-bench puts behind edge-agent and rathole.
//
// Build in GOPATH mode against Debian's packages:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o edge-go-device ./go/device
package main

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/yamux"
)

// wsConn adapts a WebSocket to net.Conn: binary messages carry one
// continuous byte stream per direction.
type wsConn struct {
	ws     *websocket.Conn
	reader io.Reader
	wmu    sync.Mutex
	scan   frameScanner
}

// frameScanner follows the yamux frames in the inbound byte stream and
// reports the control frames the relay sends ("event: ping", "event: goaway
// <code>") on stdout, so tests can see what this device received.
type frameScanner struct {
	header []byte
	skip   uint32
}

func (f *frameScanner) feed(p []byte) {
	for len(p) > 0 {
		if f.skip > 0 {
			n := uint32(len(p))
			if n > f.skip {
				n = f.skip
			}
			f.skip -= n
			p = p[n:]
			continue
		}
		need := 12 - len(f.header)
		if need > len(p) {
			need = len(p)
		}
		f.header = append(f.header, p[:need]...)
		p = p[need:]
		if len(f.header) < 12 {
			return
		}
		typ, flags := f.header[1], uint16(f.header[2])<<8|uint16(f.header[3])
		length := uint32(f.header[8])<<24 | uint32(f.header[9])<<16 | uint32(f.header[10])<<8 | uint32(f.header[11])
		f.header = f.header[:0]
		switch typ {
		case 0:
			f.skip = length
		case 2:
			if flags&2 == 0 {
				fmt.Println("event: ping")
			}
		case 3:
			fmt.Printf("event: goaway %d\n", length)
		}
	}
}

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.reader == nil {
			mt, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if mt != websocket.BinaryMessage {
				return 0, fmt.Errorf("unexpected message type %d", mt)
			}
			c.reader = r
		}
		n, err := c.reader.Read(p)
		c.scan.feed(p[:n])
		if err == io.EOF {
			c.reader = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) Close() error                       { return c.ws.Close() }
func (c *wsConn) LocalAddr() net.Addr                { return c.ws.LocalAddr() }
func (c *wsConn) RemoteAddr() net.Addr               { return c.ws.RemoteAddr() }
func (c *wsConn) SetDeadline(t time.Time) error      { return c.ws.UnderlyingConn().SetDeadline(t) }
func (c *wsConn) SetReadDeadline(t time.Time) error  { return c.ws.SetReadDeadline(t) }
func (c *wsConn) SetWriteDeadline(t time.Time) error { return c.ws.SetWriteDeadline(t) }

// patternByte matches sim_box::pattern_byte.
func patternByte(i uint64) byte {
	x := i * 0x9E3779B97F4A7C15
	return byte(x>>56) ^ byte(i)
}

// metricsHandler serves a few telemetry-contract figures, as a field
// device with an exporter would: 20 frames a second of model go-det.
func metricsHandler() http.HandlerFunc {
	start := time.Now()
	return func(w http.ResponseWriter, r *http.Request) {
		frames := int64(time.Since(start).Seconds() * 20)
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprintf(w, "# TYPE edge_inference_frames_total counter\n"+
			"edge_inference_frames_total{model=\"go-det\",stream=\"cam0\"} %d\n"+
			"edge_accel_temperature_celsius{accel=\"gpu0\"} 61.5\n"+
			"edge_host_load1 0.25\n"+
			"edge_model_info{model=\"go-det\",version=\"1\",runtime=\"tflite\"} 1\n", frames)
	}
}

func mux(metrics bool) *http.ServeMux {
	m := http.NewServeMux()
	if metrics {
		m.HandleFunc("/metrics", metricsHandler())
	}
	m.HandleFunc("/api/info", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"name": "go-device", "model": "GO-1", "firmware": "poc"})
	})
	m.HandleFunc("/test/download", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseUint(r.URL.Query().Get("bytes"), 10, 64)
		if err != nil {
			http.Error(w, "bad bytes", http.StatusBadRequest)
			return
		}
		// chunk: the size of each Write (default 64 KiB, at most 16 MiB).
		// A large one reaches hashicorp/yamux as one Write, which sends a
		// frame as large as the stream's window in one WebSocket message.
		chunk := uint64(64 * 1024)
		if c := r.URL.Query().Get("chunk"); c != "" {
			v, err := strconv.ParseUint(c, 10, 64)
			if err != nil || v == 0 || v > 16<<20 {
				http.Error(w, "bad chunk", http.StatusBadRequest)
				return
			}
			chunk = v
		}
		w.Header().Set("Content-Length", strconv.FormatUint(n, 10))
		buf := make([]byte, chunk)
		for off := uint64(0); off < n; {
			l := uint64(len(buf))
			if n-off < l {
				l = n - off
			}
			for k := uint64(0); k < l; k++ {
				buf[k] = patternByte(off + k)
			}
			if _, err := w.Write(buf[:l]); err != nil {
				return
			}
			off += l
		}
	})
	m.HandleFunc("/test/upload", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, "body error", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"bytes": n, "sha256": hex.EncodeToString(h.Sum(nil))})
	})
	m.HandleFunc("/test/headers", func(w http.ResponseWriter, r *http.Request) {
		hs := map[string]string{}
		for k, v := range r.Header {
			hs[k] = v[0]
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"method": r.Method, "uri": r.RequestURI, "headers": hs})
	})
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	m.HandleFunc("/test/ws-echo", func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, data, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(mt, data); err != nil {
				return
			}
		}
	})
	return m
}

func main() {
	relay := flag.String("relay", "ws://127.0.0.1:3800/tunnel", "relay tunnel URL (ws:// or wss://)")
	caFile := flag.String("ca", "", "PEM file of a private CA to trust for wss:// (besides the system roots)")
	reconnect := flag.Bool("reconnect", false, "dial again (with backoff) whenever the session ends")
	metrics := flag.Bool("metrics", false, "serve /metrics (telemetry contract figures); without it the device has none, as most in the field")
	listen := flag.String("listen", "", "serve the endpoints with plain net/http on this address instead of dialing a relay (a Go box for edge-bench)")
	flag.Parse()
	if *listen != "" {
		log.Fatal(http.ListenAndServe(*listen, mux(*metrics)))
	}
	token := os.Getenv("EDGE_DEVICE_TOKEN")
	if token == "" {
		log.Fatal("EDGE_DEVICE_TOKEN is required")
	}
	hdr := http.Header{}
	hdr.Set("Authorization", "Bearer "+token)
	hdr.Set("User-Agent", "go-poc-device/0.9")
	dialer := *websocket.DefaultDialer
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			log.Fatalf("ca: %v", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			log.Fatalf("ca: no certificate in %s", *caFile)
		}
		dialer.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	handler := mux(*metrics)
	backoff := 100 * time.Millisecond
	for {
		err := runOnce(dialer, *relay, hdr, handler)
		if !*reconnect {
			log.Fatalf("session ended: %v", err)
		}
		log.Printf("session ended: %v; reconnecting in %v", err, backoff)
		time.Sleep(backoff)
		if backoff < 2*time.Second {
			backoff *= 2
		}
	}
}

// runOnce dials the relay and serves HTTP on its streams until the session ends.
func runOnce(dialer websocket.Dialer, relay string, hdr http.Header, handler http.Handler) error {
	ws, resp, err := dialer.Dial(relay, hdr)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		return fmt.Errorf("dial failed (status %d): %v", status, err)
	}
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = os.Stderr
	session, err := yamux.Server(&wsConn{ws: ws}, cfg)
	if err != nil {
		return fmt.Errorf("yamux: %v", err)
	}
	fmt.Println("connected")
	return http.Serve(deadlineListener{session}, handler)
}

// deadlineListener hands net/http streams whose SetReadDeadline interrupts
// a Read in progress. net/http keeps a background read pending on every
// connection and, before a Hijack (a WebSocket upgrade), aborts it with
// SetReadDeadline(past) and waits for it to return. Debian's
// hashicorp/yamux looks at the deadline only when a Read starts, so that
// wait lasted until the client sent more bytes: after the request of an
// upgrade it sends none, and the upgrade hung until the proxy's first-byte
// timeout (about one upgrade in thirty; later yamux releases wake a
// blocked Read on a deadline change). A device built the same way has the
// same hang; nothing on the wire can wake it.
type deadlineListener struct{ net.Listener }

func (l deadlineListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newDeadlineConn(c), nil
}

type readResult struct {
	data []byte
	err  error
}

// deadlineConn reads its stream in one goroutine and lets Read wait on
// either the next chunk or a deadline, re-armed whenever it changes.
type deadlineConn struct {
	net.Conn
	chunks  chan readResult
	once    sync.Once
	closing sync.Once
	done    chan struct{}
	mu      sync.Mutex
	changed chan struct{}
	until   time.Time
	rest    []byte
	failed  error
}

func newDeadlineConn(c net.Conn) *deadlineConn {
	return &deadlineConn{
		Conn:    c,
		chunks:  make(chan readResult, 1),
		done:    make(chan struct{}),
		changed: make(chan struct{}),
	}
}

func (c *deadlineConn) pump() {
	for {
		buf := make([]byte, 32*1024)
		n, err := c.Conn.Read(buf)
		select {
		case c.chunks <- readResult{buf[:n], err}:
		case <-c.done:
			return
		}
		if err != nil {
			return
		}
	}
}

// Close ends the stream and the reading goroutine with it.
func (c *deadlineConn) Close() error {
	c.closing.Do(func() { close(c.done) })
	return c.Conn.Close()
}

func (c *deadlineConn) Read(p []byte) (int, error) {
	c.once.Do(func() { go c.pump() })
	if len(c.rest) == 0 && c.failed == nil {
		for {
			c.mu.Lock()
			until, changed := c.until, c.changed
			c.mu.Unlock()
			timer := time.NewTimer(time.Hour)
			if !until.IsZero() {
				timer.Reset(time.Until(until))
			} else {
				timer.Stop()
			}
			select {
			case r := <-c.chunks:
				timer.Stop()
				c.rest, c.failed = r.data, r.err
			case <-timer.C:
				return 0, os.ErrDeadlineExceeded
			case <-changed:
				timer.Stop()
				continue
			}
			break
		}
	}
	if len(c.rest) > 0 {
		n := copy(p, c.rest)
		c.rest = c.rest[n:]
		return n, nil
	}
	return 0, c.failed
}

func (c *deadlineConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.until = t
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	return nil
}

func (c *deadlineConn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.Conn.SetWriteDeadline(t)
}
