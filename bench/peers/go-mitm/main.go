// A minimal, competent TLS-intercepting forward proxy on Go's httputil.ReverseProxy: the
// benchmark peer for portcullis (gatekeeper's design). CONNECT is answered 200, the raw
// connection joins one http.Server that terminates TLS with certificates forged per SNI name
// from one CA and one shared key, and every request is proxied through one pooled Transport.
// Standard library only; it prints "listening on HOST:PORT" when ready.
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
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"strings"
	"sync"
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
	mu    sync.Mutex
	cache map[string]*tls.Certificate
}

func (f *forger) get(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := hello.ServerName
	if name == "" {
		name = "localhost"
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
	cert := &tls.Certificate{Certificate: [][]byte{der, f.ca.Raw}, PrivateKey: f.leaf}
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

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address")
	caCert := flag.String("ca-cert", "", "CA certificate (PEM) to forge with")
	caKey := flag.String("ca-key", "", "CA private key (PEM)")
	leafKey := flag.String("leaf-key", "", "the one private key every forged certificate uses (PEM)")
	trust := flag.String("upstream-ca", "", "extra CA (PEM) trusted for upstream TLS")
	resolve := flag.String("resolve", "", "suffix=IP: names ending in suffix are dialled at IP")
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
		roots.AppendCertsFromPEM(data)
	}
	suffix, ip := "", ""
	if parts := strings.SplitN(*resolve, "=", 2); len(parts) == 2 {
		suffix, ip = parts[0], parts[1]
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	transport := &http.Transport{
		Proxy:               nil,
		TLSClientConfig:     &tls.Config{RootCAs: roots},
		ForceAttemptHTTP2:   true,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     30 * time.Second,
	}
	transport.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, _ := net.SplitHostPort(addr)
		if suffix != "" && strings.HasSuffix(host, suffix) {
			addr = net.JoinHostPort(ip, port)
		}
		return dialer.DialContext(ctx, network, addr)
	}

	proxy := &httputil.ReverseProxy{
		Director: func(req *http.Request) {
			req.URL.Scheme = "https"
			req.URL.Host = req.Host
		},
		Transport:     transport,
		FlushInterval: -1,
		ErrorLog:      log.New(discard{}, "", 0),
	}

	inner := &connListener{conns: make(chan net.Conn, 64), done: make(chan struct{})}
	tlsServer := &http.Server{Handler: proxy, TLSConfig: &tls.Config{GetCertificate: f.get, NextProtos: []string{"h2", "http/1.1"}}, ErrorLog: log.New(discard{}, "", 0)}
	go func() { _ = tlsServer.ServeTLS(inner, "", "") }()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	inner.addr = ln.Addr()
	fmt.Printf("listening on %s\n", ln.Addr())
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		go handshake(conn, inner)
	}
}

// handshake reads the CONNECT request, answers 200 and hands the tunnel to the TLS server.
func handshake(conn net.Conn, inner *connListener) {
	reader := bufio.NewReader(conn)
	req, err := http.ReadRequest(reader)
	if err != nil || req.Method != http.MethodConnect {
		conn.Close()
		return
	}
	if _, err := conn.Write([]byte("HTTP/1.1 200 Connection Established\r\n\r\n")); err != nil {
		conn.Close()
		return
	}
	inner.conns <- &bufferedConn{Conn: conn, reader: reader}
}

// bufferedConn keeps bytes the CONNECT reader already pulled in (a client's ClientHello).
type bufferedConn struct {
	net.Conn
	reader *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.reader.Read(p) }

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
