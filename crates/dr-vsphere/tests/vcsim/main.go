// vcsim for vmdr's tests: govmomi's vCenter simulator with a chosen
// inventory, credentials, optional TLS, and a test-only endpoint to inject
// faults the SOAP API cannot (a host that stops responding).
//
// Built in GOPATH mode against Debian's golang-github-vmware-govmomi-dev:
//   GO111MODULE=off GOPATH=/usr/share/gocode go build -o vcsim .
// Prints one JSON line: {"url": ".../sdk", "sha256": "<cert thumbprint>"}.
package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

func main() {
	clusters := flag.Int("clusters", 1, "clusters")
	hosts := flag.Int("hosts", 3, "hosts per cluster")
	standalone := flag.Int("standalone", 0, "standalone hosts")
	vms := flag.Int("vms", 4, "VMs per host or cluster resource pool")
	useTLS := flag.Bool("tls", false, "serve https with a self-signed certificate")
	certOut := flag.String("cert-out", "", "with -tls: write the certificate (PEM) here")
	certKind := flag.String("cert-kind", "good", "with -tls: good, weak (1024-bit RSA key), expired, wrong-name")
	user := flag.String("user", "vmdr", "user name")
	pass := flag.String("pass", "s3cret", "password")
	idle := flag.Duration("session-idle", 0, "expire sessions idle this long (0: never)")
	anyUser := flag.Bool("any-user", false, "accept any non-empty user and password")
	lifeline := flag.Bool("stdin-lifeline", false, "exit, removing the datastores' directories, when stdin closes")
	methodDelay := flag.String("method-delay", "", "METHOD=MS[,METHOD=MS]: serve these calls that much later (a slow vCenter)")
	flag.Parse()

	model := simulator.VPX()
	model.Datacenter = 1
	model.Cluster = *clusters
	model.ClusterHost = *hosts
	model.Host = *standalone
	model.Machine = *vms
	if *methodDelay != "" {
		model.DelayConfig.MethodDelay = map[string]int{}
		for _, pair := range strings.Split(*methodDelay, ",") {
			var ms int
			kv := strings.SplitN(pair, "=", 2)
			if len(kv) != 2 {
				fmt.Fprintln(os.Stderr, "method-delay: expected METHOD=MS, got", pair)
				os.Exit(2)
			}
			if _, err := fmt.Sscanf(kv[1], "%d", &ms); err != nil {
				fmt.Fprintln(os.Stderr, "method-delay:", err)
				os.Exit(2)
			}
			model.DelayConfig.MethodDelay[kv[0]] = ms
		}
	}
	if err := model.Create(); err != nil {
		fmt.Fprintln(os.Stderr, "create:", err)
		os.Exit(1)
	}
	simulator.SessionIdleTimeout = *idle
	model.Service.Listen = &url.URL{Host: "127.0.0.1:0", User: url.UserPassword(*user, *pass)}
	if *anyUser {
		model.Service.Listen.User = nil
	}
	if *useTLS {
		cert, pemBytes := selfSigned(*certKind)
		model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
		if *certOut != "" {
			if err := os.WriteFile(*certOut, pemBytes, 0o644); err != nil {
				fmt.Fprintln(os.Stderr, "cert-out:", err)
				os.Exit(1)
			}
		}
	}
	model.Service.HandleFunc("/vmdr-test/host-state", hostState)
	model.Service.HandleFunc("/vmdr-test/ips", setIPs)
	model.Service.HandleFunc("/vmdr-test/quick-stats", quickStats)
	model.Service.HandleFunc("/vmdr-test/ha", haConfig)
	model.Service.HandleFunc("/vmdr-test/ha-state", haState)
	model.Service.HandleFunc("/vmdr-test/datastores", datastores)
	model.Service.HandleFunc("/vmdr-test/expire-upload-sessions", expireUploadSessions)
	s := model.Service.NewServer()
	// In front of the simulator's /folder service, which takes any cookie:
	// a host-specific pattern wins over its general one (the port is only
	// known now, and the mux matches the host without it).
	host, _, _ := net.SplitHostPort(s.URL.Host)
	model.Service.ServeMux.HandleFunc(host+"/folder/", gatedFolder(model.Service.ServeDatastore))
	u := *s.URL
	u.User = nil
	out := map[string]string{"url": u.String()}
	if *useTLS {
		sum := sha256.Sum256(s.Certificate().Raw)
		parts := make([]string, len(sum))
		for i, b := range sum {
			parts[i] = fmt.Sprintf("%02X", b)
		}
		out["sha256"] = strings.Join(parts, ":")
	}
	line, _ := json.Marshal(out)
	fmt.Println(string(line))
	if *lifeline {
		// The starter holds our stdin: when it closes (the starter is
		// done, or died), remove the datastores' directories and exit.
		_, _ = io.Copy(io.Discard, os.Stdin)
		model.Remove()
		os.Exit(0)
	}
	for {
		time.Sleep(time.Hour)
	}
}

// datastores answers GET /vmdr-test/datastores with each datastore's local
// directory, {"NAME": "/tmp/..."}: a test reads what was uploaded there.
func datastores(w http.ResponseWriter, r *http.Request) {
	out := map[string]string{}
	for _, obj := range simulator.Map.All("Datastore") {
		if ds, ok := obj.(*simulator.Datastore); ok {
			out[ds.Name] = strings.TrimPrefix(ds.Info.GetDatastoreInfo().Url, "file://")
		}
	}
	line, _ := json.Marshal(out)
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintln(w, string(line))
}

// uploadGate models sessions that expire under an upload: vcsim's /folder
// service never checks the session cookie, as a vCenter does.
var uploadGate struct {
	sync.Mutex
	// The next this many PUTs expire the session their cookie names.
	expireNext int
	dead       map[string]bool
}

// expireUploadSessions answers POST /vmdr-test/expire-upload-sessions?n=N:
// the sessions of the next N uploads (PUT /folder/...) expire as they
// arrive, so each is refused with 401, as is every later request with the
// same cookie.
func expireUploadSessions(w http.ResponseWriter, r *http.Request) {
	var n int
	if _, err := fmt.Sscanf(r.URL.Query().Get("n"), "%d", &n); err != nil || n < 0 {
		http.Error(w, "n: a count", http.StatusBadRequest)
		return
	}
	uploadGate.Lock()
	uploadGate.expireNext = n
	uploadGate.Unlock()
	fmt.Fprintln(w, "ok")
}

func gatedFolder(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key := ""
		if c, err := r.Cookie("vmware_soap_session"); err == nil {
			key = c.Value
		}
		uploadGate.Lock()
		if uploadGate.dead == nil {
			uploadGate.dead = map[string]bool{}
		}
		if r.Method == http.MethodPut && uploadGate.expireNext > 0 {
			uploadGate.expireNext--
			uploadGate.dead[key] = true
		}
		dead := uploadGate.dead[key]
		uploadGate.Unlock()
		if dead {
			// The body is not read: a client must cope with that too.
			http.Error(w, "session expired", http.StatusUnauthorized)
			return
		}
		next(w, r)
	}
}

// hostState sets a host's connection state: POST
// /vmdr-test/host-state?name=H&state=notResponding|connected|disconnected.
func hostState(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	state := types.HostSystemConnectionState(r.URL.Query().Get("state"))
	for _, obj := range simulator.Map.All("HostSystem") {
		h, ok := obj.(*simulator.HostSystem)
		if !ok || h.Name != name {
			continue
		}
		// Through the registry, so property collectors waiting for
		// updates (WaitForUpdatesEx) see the change, as on a vCenter.
		simulator.Map.Update(h, []types.PropertyChange{{Name: "runtime.connectionState", Val: state}})
		simulator.Map.WithLock(h, func() {
			h.Summary.Runtime = &h.Runtime
		})
		// vCenter reports the VMs of a host it lost as not responding too.
		vmState := types.VirtualMachineConnectionStateConnected
		if state != types.HostSystemConnectionStateConnected {
			vmState = types.VirtualMachineConnectionState(state)
		}
		for _, ref := range h.Vm {
			if vm, ok := simulator.Map.Get(ref).(*simulator.VirtualMachine); ok {
				changes := []types.PropertyChange{{Name: "runtime.connectionState", Val: vmState}}
				if vmState != types.VirtualMachineConnectionStateConnected {
					// vCenter lets a VM of a lost host be removed from the
					// inventory (and registered elsewhere); vcsim refuses
					// while its last power state says on, so clear it
					// (clients see "not responding" and no power state).
					changes = append(changes, types.PropertyChange{Name: "runtime.powerState", Val: types.VirtualMachinePowerStatePoweredOff})
				}
				simulator.Map.Update(vm, changes)
			}
		}
		fmt.Fprintln(w, "ok")
		return
	}
	http.Error(w, "no such host", http.StatusNotFound)
}

// quickStats sets what vCenter's quick statistics say, which the
// simulator leaves at 0: POST /vmdr-test/quick-stats?host=H&cpu=MHZ&mem=MB
// (the host's overall CPU and memory in use) or ?vm=V&overhead=MB (the
// memory the hypervisor consumes for the VM beside the guest's).
func quickStats(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	num := func(key string) (int64, bool) {
		var n int64
		_, err := fmt.Sscanf(q.Get(key), "%d", &n)
		return n, err == nil
	}
	if name := q.Get("host"); name != "" {
		cpu, ok1 := num("cpu")
		mem, ok2 := num("mem")
		if !ok1 || !ok2 {
			http.Error(w, "host needs cpu and mem", http.StatusBadRequest)
			return
		}
		h := hostNamed(name)
		if h == nil {
			http.Error(w, "no such host", http.StatusNotFound)
			return
		}
		simulator.Map.Update(h, []types.PropertyChange{
			{Name: "summary.quickStats.overallCpuUsage", Val: int32(cpu)},
			{Name: "summary.quickStats.overallMemoryUsage", Val: int32(mem)},
		})
		fmt.Fprintln(w, "ok")
		return
	}
	name := q.Get("vm")
	overhead, ok := num("overhead")
	if name == "" || !ok {
		http.Error(w, "needs host=H&cpu=&mem= or vm=V&overhead=", http.StatusBadRequest)
		return
	}
	for _, obj := range simulator.Map.All("VirtualMachine") {
		if vm, ok := obj.(*simulator.VirtualMachine); ok && vm.Name == name {
			simulator.Map.Update(vm, []types.PropertyChange{
				{Name: "summary.quickStats.consumedOverheadMemory", Val: int32(overhead)},
			})
			fmt.Fprintln(w, "ok")
			return
		}
	}
	http.Error(w, "no such vm", http.StatusNotFound)
}

// haConfig turns vSphere HA on for a cluster, which the simulator does not
// model: POST /vmdr-test/ha?cluster=C&restart=disabled|medium
// &response=powerOff|shutdown|none[&delay=S][&shutdown=S] (the isolation
// policy delay and the shutdown timeout, as the advanced options
// das.config.fdm.isolationPolicyDelaySec and das.isolationShutdownTimeout).
func haConfig(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	for _, obj := range simulator.Map.All("ClusterComputeResource") {
		c, ok := obj.(*simulator.ClusterComputeResource)
		if !ok || c.Name != q.Get("cluster") {
			continue
		}
		das := types.ClusterDasConfigInfo{
			Enabled:        types.NewBool(true),
			HostMonitoring: "enabled",
			DefaultVmSettings: &types.ClusterDasVmSettings{
				RestartPriority:   q.Get("restart"),
				IsolationResponse: q.Get("response"),
			},
		}
		for key, param := range map[string]string{
			"das.config.fdm.isolationPolicyDelaySec": "delay",
			"das.isolationShutdownTimeout":           "shutdown",
		} {
			if v := q.Get(param); v != "" {
				das.Option = append(das.Option, &types.OptionValue{Key: key, Value: v})
			}
		}
		simulator.Map.WithLock(c, func() {
			cfg := *c.ConfigurationEx.(*types.ClusterConfigInfoEx)
			cfg.DasConfig = das
			c.ConfigurationEx = &cfg
		})
		simulator.Map.Update(c, []types.PropertyChange{{Name: "configurationEx", Val: c.ConfigurationEx}})
		fmt.Fprintln(w, "ok")
		return
	}
	http.Error(w, "no such cluster", http.StatusNotFound)
}

// haState sets what HA's master says of a host: POST
// /vmdr-test/ha-state?host=H&state=connectedToMaster|networkIsolated|
// networkPartitionedFromMaster|hostDown|...
func haState(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	h := hostNamed(q.Get("host"))
	if h == nil {
		http.Error(w, "no such host", http.StatusNotFound)
		return
	}
	state := &types.ClusterDasFdmHostState{State: q.Get("state")}
	simulator.Map.Update(h, []types.PropertyChange{{Name: "runtime.dasHostState", Val: state}})
	fmt.Fprintln(w, "ok")
}

// hostNamed is the simulated host of that name, or nil.
func hostNamed(name string) *simulator.HostSystem {
	for _, obj := range simulator.Map.All("HostSystem") {
		if h, ok := obj.(*simulator.HostSystem); ok && h.Name == name {
			return h
		}
	}
	return nil
}

// setIPs gives a host and its VMs addresses a test can make answer (inside
// a network namespace of its own): POST /vmdr-test/ips?host=H&prefix=P sets
// the host's management address to P+"1" and its VMs' guest addresses to
// P+"10", P+"11", ... in the order of the host's VM list; prints
// "VM=IP" lines.
func setIPs(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("host")
	prefix := r.URL.Query().Get("prefix")
	var host *simulator.HostSystem
	for _, obj := range simulator.Map.All("HostSystem") {
		if h, ok := obj.(*simulator.HostSystem); ok && h.Name == name {
			host = h
		}
	}
	if host == nil || prefix == "" {
		http.Error(w, "no such host, or no prefix", http.StatusNotFound)
		return
	}
	var vnics []types.HostVirtualNic
	var vms []types.ManagedObjectReference
	simulator.Map.WithLock(host, func() {
		// The configuration is shared between simulated hosts: copy it
		// before changing this one's.
		cfg := *host.Config
		network := *cfg.Network
		vnics = append([]types.HostVirtualNic(nil), network.Vnic...)
		if len(vnics) > 0 {
			spec := vnics[0].Spec
			ip := types.HostIpConfig{IpAddress: prefix + "1", SubnetMask: "255.255.255.0"}
			if spec.Ip != nil {
				ip = *spec.Ip
				ip.IpAddress = prefix + "1"
			}
			spec.Ip = &ip
			vnics[0].Spec = spec
		}
		network.Vnic = vnics
		cfg.Network = &network
		host.Config = &cfg
		vms = append(vms, host.Vm...)
	})
	simulator.Map.Update(host, []types.PropertyChange{{Name: "config.network.vnic", Val: vnics}})
	for i, ref := range vms {
		vm, ok := simulator.Map.Get(ref).(*simulator.VirtualMachine)
		if !ok {
			continue
		}
		ip := fmt.Sprintf("%s%d", prefix, 10+i)
		simulator.Map.Update(vm, []types.PropertyChange{{Name: "guest.ipAddress", Val: ip}})
		fmt.Fprintf(w, "%s=%s\n", vm.Name, ip)
	}
}

// selfSigned makes a CA and a 2048-bit RSA server certificate for
// 127.0.0.1 signed by it (the simulator's built-in test certificate has a
// 1024-bit key, which modern TLS stacks rightly refuse). Returns the server
// certificate and the CA's PEM. `kind` spoils it on purpose, for the
// client's error messages: "weak" (a 1024-bit key, as the built-in one),
// "expired", "wrong-name" (for another host only).
func selfSigned(kind string) (tls.Certificate, []byte) {
	caKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "vmdr test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDer, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		panic(err)
	}
	bits := 2048
	if kind == "weak" {
		bits = 1024
	}
	key, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "vcsim.vmdr.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
	}
	switch kind {
	case "expired":
		tmpl.NotBefore = time.Now().Add(-48 * time.Hour)
		tmpl.NotAfter = time.Now().Add(-24 * time.Hour)
	case "wrong-name":
		tmpl.IPAddresses = nil
		tmpl.DNSNames = []string{"other-vcenter.vmdr.test"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caTmpl, &key.PublicKey, caKey)
	if err != nil {
		panic(err)
	}
	caPem := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDer})
	return tls.Certificate{Certificate: [][]byte{der, caDer}, PrivateKey: key}, caPem
}
