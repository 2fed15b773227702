// A minimal, competent TLS-intercepting forward proxy on Go's httputil.ReverseProxy: the
// benchmark peer for portcullis (gatekeeper's design). CONNECT is answered 200, the raw
// connection joins one http.Server that terminates TLS (h2 and HTTP/1.1) with certificates
// forged per SNI name from one CA and one shared key, and every request is proxied through one
// pooled Transport (h2 or HTTP/1.1 upstream, whatever the upstream picks).
// Standard library only (Go 1.19); it prints "listening on HOST:PORT" when ready.
//
// What it does not do, so that it costs no more than a plain relay: it adds no header (no
// X-Forwarded-For, no Accept-Encoding, no Via), does not decompress, and buffers no body (SSE
// and bodies of unknown length are flushed as they arrive; ReverseProxy's own rule).
// With -resolve SUFFIX=IP, names equal to SUFFIX (without its leading dot) or ending in it are
// dialled at IP, and every other name is refused: the benchmark stays on the loopback interface.
package main

import (
	"bufio"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// connListener hands hijacked CONNECT tunnels to http.Server as if they were accepted.
type connListener struct {
	conns chan net.Conn
	addr  net.Addr
	once  sync.Once
	done  chan struct{}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, errors.New("closed")
	}
}
func (l *connListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *connListener) Addr() net.Addr { return l.addr }

type forger struct {
	ca    *x509.Certificate
	caKey crypto.Signer
	leaf  crypto.Signer
	mu    sync.RWMutex
	cache map[string]*tls.Certificate
}

func (f *forger) get(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := strings.ToLower(hello.ServerName)
	if name == "" {
		// No SNI: the CONNECT's host name.
		if tc, ok := hello.Conn.(*tunnelConn); ok {
			name, _, _ = net.SplitHostPort(tc.authority)
		}
	}
	if name == "" {
		name = "localhost"
	}
	f.mu.RLock()
	cert, ok := f.cache[name]
	f.mu.RUnlock()
	if ok {
		return cert, nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if cert, ok := f.cache[name]; ok {
		return cert, nil
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	template := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-48 * time.Hour),
		NotAfter:     time.Now().Add(90 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := net.ParseIP(name); ip != nil {
		template.IPAddresses = []net.IP{ip}
	} else {
		template.DNSNames = []string{name}
	}
	der, err := x509.CreateCertificate(rand.Reader, template, f.ca, f.leaf.Public(), f.caKey)
	if err != nil {
		return nil, err
	}
	leaf, _ := x509.ParseCertificate(der)
	cert = &tls.Certificate{Certificate: [][]byte{der, f.ca.Raw}, PrivateKey: f.leaf, Leaf: leaf}
	f.cache[name] = cert
	return cert, nil
}

func readPEM(file string) *pem.Block {
	data, err := os.ReadFile(file)
	if err != nil {
		log.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		log.Fatalf("%s: no PEM block", file)
	}
	return block
}

func parseKey(block *pem.Block) crypto.Signer {
	if key, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		return key.(crypto.Signer)
	}
	if key, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return key
	}
	key, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		log.Fatal("unsupported private key")
	}
	return key
}

// bufferPool hands ReverseProxy its 32 KiB copy buffers (otherwise one is allocated per body).
type bufferPool struct{ pool sync.Pool }

func (b *bufferPool) Get() []byte  { return *(b.pool.Get().(*[]byte)) }
func (b *bufferPool) Put(p []byte) { b.pool.Put(&p) }

type authorityKey struct{}

var (
	errorCount  atomic.Int64
	firstErrors sync.Map
)

// resolver maps the -resolve suffix to its IP and refuses every other name.
type resolver struct{ suffix, bare, ip string }

func (r resolver) allowed(host string) bool {
	if r.ip == "" {
		return true
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	return host == r.bare || strings.HasSuffix(host, r.suffix)
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address")
	caCert := flag.String("ca-cert", "", "CA certificate (PEM) to forge with")
	caKey := flag.String("ca-key", "", "CA private key (PEM)")
	leafKey := flag.String("leaf-key", "", "the one private key every forged certificate uses (PEM)")
	trust := flag.String("upstream-ca", "", "extra CA (PEM) trusted for upstream TLS")
	verbose := flag.Bool("verbose", false, "log proxy and server errors to stderr (for debugging; off when measuring)")
	resolveFlag := flag.String("resolve", "", "suffix=IP: names ending in suffix (or equal to it without its leading dot) are dialled at IP; every other name is refused")
	flag.Parse()

	ca, err := x509.ParseCertificate(readPEM(*caCert).Bytes)
	if err != nil {
		log.Fatal(err)
	}
	f := &forger{ca: ca, caKey: parseKey(readPEM(*caKey)), leaf: parseKey(readPEM(*leafKey)), cache: map[string]*tls.Certificate{}}

	roots, _ := x509.SystemCertPool()
	if roots == nil {
		roots = x509.NewCertPool()
	}
	if *trust != "" {
		data, err := os.ReadFile(*trust)
		if err != nil {
			log.Fatal(err)
		}
		if !roots.AppendCertsFromPEM(data) {
			log.Fatalf("%s: no certificate", *trust)
		}
	}
	errorLog := log.New(io.Discard, "", 0)
	if *verbose {
		errorLog = log.New(os.Stderr, "go-mitm: ", log.Lmicroseconds)
	}
	var res resolver
	if parts := strings.SplitN(*resolveFlag, "=", 2); len(parts) == 2 {
		suffix := strings.ToLower(parts[0])
		if !strings.HasPrefix(suffix, ".") {
			suffix = "." + suffix
		}
		res = resolver{suffix: suffix, bare: strings.TrimPrefix(suffix, "."), ip: parts[1]}
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	transport := &http.Transport{
		Proxy:           nil,
		TLSClientConfig: &tls.Config{RootCAs: roots, ClientSessionCache: tls.NewLRUClientSessionCache(256)},
		// A custom TLS config and dialer turn h2 off unless asked for.
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256, // the default, 2, would close most of a busy client's upstream connections
		IdleConnTimeout:       30 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		DisableCompression:    true, // no Accept-Encoding added, nothing decompressed: bodies pass as sent
	}
	transport.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if res.ip != "" {
			if !res.allowed(host) {
				return nil, fmt.Errorf("%s is not under %s: refused", host, res.suffix)
			}
			addr = net.JoinHostPort(res.ip, port)
		}
		return dialer.DialContext(ctx, network, addr)
	}

	proxy := &httputil.ReverseProxy{
		Director: func(req *http.Request) {
			req.URL.Scheme = "https"
			req.URL.Host = req.Context().Value(authorityKey{}).(string)
			req.Header["X-Forwarded-For"] = nil // nil: ReverseProxy adds none
		},
		Transport:  transport,
		BufferPool: &bufferPool{pool: sync.Pool{New: func() any { b := make([]byte, 32*1024); return &b }}},
		ErrorLog:   errorLog,
		ErrorHandler: func(w http.ResponseWriter, req *http.Request, err error) {
			// Counted, not printed (printing is not what is measured); the first few are kept.
			if n := errorCount.Add(1); n <= 5 {
				firstErrors.Store(n, fmt.Sprintf("%s %s: %v", req.Method, req.URL, err))
			}
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	// Requests inside a tunnel go to the CONNECT's authority; another Host is refused.
	handler := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		authority := req.Context().Value(authorityKey{}).(string)
		if !strings.EqualFold(req.Host, authority) {
			http.Error(w, "Host does not match the tunnel", http.StatusBadRequest)
			return
		}
		proxy.ServeHTTP(w, req)
	})

	inner := &connListener{conns: make(chan net.Conn, 256), done: make(chan struct{})}
	tlsServer := &http.Server{
		Handler:   handler,
		TLSConfig: &tls.Config{GetCertificate: f.get, NextProtos: []string{"h2", "http/1.1"}},
		ErrorLog:  errorLog,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if tc, ok := c.(*tls.Conn); ok {
				if t, ok := tc.NetConn().(*tunnelConn); ok {
					return context.WithValue(ctx, authorityKey{}, t.authority)
				}
			}
			return context.WithValue(ctx, authorityKey{}, "")
		},
	}
	go func() { _ = tlsServer.ServeTLS(inner, "", "") }()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	inner.addr = ln.Addr()
	// SIGTERM: report the proxy errors (upstream failures answered 502) and exit 0.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		for i := int64(1); i <= 5; i++ {
			if text, ok := firstErrors.Load(i); ok {
				fmt.Printf("error %s\n", text)
			}
		}
		fmt.Printf("errors %d\n", errorCount.Load())
		os.Exit(0)
	}()
	fmt.Printf("listening on %s\n", ln.Addr())
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		go handshake(conn, inner, res)
	}
}

// handshake reads the CONNECT request, answers 200 and hands the tunnel to the TLS server.
func handshake(conn net.Conn, inner *connListener, res resolver) {
	reader := bufio.NewReader(conn)
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	req, err := http.ReadRequest(reader)
	if err != nil || req.Method != http.MethodConnect {
		conn.Close()
		return
	}
	_ = conn.SetReadDeadline(time.Time{})
	host, _, err := net.SplitHostPort(req.Host)
	if err != nil || !res.allowed(host) {
		_, _ = conn.Write([]byte("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
		conn.Close()
		return
	}
	if _, err := conn.Write([]byte("HTTP/1.1 200 Connection Established\r\n\r\n")); err != nil {
		conn.Close()
		return
	}
	tc := &tunnelConn{Conn: conn, authority: req.Host}
	if n := reader.Buffered(); n > 0 {
		// Bytes the CONNECT reader already pulled in (a client's ClientHello) are read first.
		tc.pending, _ = reader.Peek(n)
	}
	inner.conns <- tc
}

// tunnelConn is the client's connection after CONNECT: bytes read ahead are returned first,
// then reads go straight to the socket (no extra copy through a bufio.Reader).
type tunnelConn struct {
	net.Conn
	authority string
	pending   []byte
}

func (c *tunnelConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
