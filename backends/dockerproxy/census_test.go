package dockerproxy

import (
	"reflect"
	"sort"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
)

// fieldCensus classifies every field of the Docker API types the guard
// decodes and forwards. A docker/docker upgrade that adds a field fails
// TestFieldCensus until the field is reviewed and classified here (and
// checked in the filter where it needs to be), so no new field is ever
// forwarded unreviewed.
//
//	allowed: forwarded as sent; the reason says why it is harmless
//	checked: the filter checks or rewrites it
//	refused: any value but the zero value is refused
//	output:  set by the engine, ignored or refused in requests
var fieldCensus = map[string]map[string]string{
	"container.Config": {
		"Hostname": "allowed: the container's own", "Domainname": "allowed: the container's own", "User": "allowed: a user inside the container",
		"AttachStdin": "allowed: streams", "AttachStdout": "allowed: streams", "AttachStderr": "allowed: streams",
		"ExposedPorts": "allowed: metadata, publishes nothing", "Tty": "allowed: streams", "OpenStdin": "allowed: streams", "StdinOnce": "allowed: streams",
		"Env": "allowed: the container's own", "Cmd": "allowed: the container's own", "Healthcheck": "allowed: runs in the container",
		"ArgsEscaped": "allowed: Windows command line", "Image": "checked: no other project's image", "Volumes": "allowed: anonymous volumes, removed with the container (v=1)",
		"WorkingDir": "allowed: the container's own", "Entrypoint": "allowed: the container's own", "NetworkDisabled": "allowed: less network",
		"MacAddress": "allowed: on the job's own networks", "OnBuild": "allowed: image metadata", "Labels": "checked: berth.* dropped, the job's added",
		"StopSignal": "allowed: the container's own", "StopTimeout": "allowed: the container's own", "Shell": "allowed: the container's own",
	},
	"container.HostConfig": {
		"Binds": "checked: builds dir only, again at every start; anonymous ones become labelled volumes", "ContainerIDFile": "allowed: a client-side field",
		"LogConfig": "checked: local drivers only", "NetworkMode": "checked: the job's networks, by id", "PortBindings": "checked: published on the job network's gateway (ports.go)",
		"RestartPolicy": "refused: the engine would restart unchecked", "AutoRemove": "allowed: removes the container", "VolumeDriver": "refused",
		"VolumesFrom": "refused", "ConsoleSize": "allowed: terminal size", "Annotations": "refused: runtime configuration",
		"CapAdd": "refused", "CapDrop": "allowed: fewer capabilities", "CgroupnsMode": "checked: private only",
		"DNS": "allowed: the container's resolver", "DNSOptions": "allowed: the container's resolver", "DNSSearch": "allowed: the container's resolver",
		"ExtraHosts": "allowed: the container's /etc/hosts", "GroupAdd": "allowed: supplementary groups of the container's process; binds are the builds dir only",
		"IpcMode": "checked: private, shareable, none or a job container", "Cgroup": "refused", "Links": "checked: the job's containers",
		"OomScoreAdj": "checked: not negative", "PidMode": "checked: a job container only", "Privileged": "refused",
		"PublishAllPorts": "checked: each exposed port on the gateway (ports.go)", "ReadonlyRootfs": "allowed: less writable",
		"SecurityOpt": "checked: no-new-privileges only", "StorageOpt": "refused", "Tmpfs": "checked: size within the ceiling",
		"UTSMode": "refused", "UsernsMode": "refused", "ShmSize": "checked: within the ceiling", "Sysctls": "refused",
		"Runtime": "refused", "Isolation": "checked: default only", "Mounts": "checked: see mount.Mount", "MaskedPaths": "refused",
		"ReadonlyPaths": "refused", "Init": "allowed: the engine's init in the container",
	},
	"container.Resources": {
		"CPUShares": "checked: at most 1024", "Memory": "checked: within the ceiling", "NanoCPUs": "checked: within the ceiling",
		"CgroupParent": "refused", "BlkioWeight": "allowed: the container's own I/O weight",
		"BlkioWeightDevice": "allowed: throttles the container's own I/O", "BlkioDeviceReadBps": "allowed: throttles the container's own I/O",
		"BlkioDeviceWriteBps": "allowed: throttles the container's own I/O", "BlkioDeviceReadIOps": "allowed: throttles the container's own I/O",
		"BlkioDeviceWriteIOps": "allowed: throttles the container's own I/O", "CPUPeriod": "checked: refused under a CPU ceiling",
		"CPUQuota": "checked: refused under a CPU ceiling", "CPURealtimePeriod": "refused", "CPURealtimeRuntime": "refused",
		"CpusetCpus": "allowed: pins the container within its CPU ceiling", "CpusetMems": "allowed: pins the container's memory nodes",
		"Devices": "refused", "DeviceCgroupRules": "refused", "DeviceRequests": "refused", "KernelMemory": "refused", "KernelMemoryTCP": "refused",
		"MemoryReservation": "checked: within the memory ceiling", "MemorySwap": "checked: within the ceiling",
		"MemorySwappiness": "allowed: the container's own swapping", "OomKillDisable": "refused",
		"PidsLimit": "checked: within the ceiling", "Ulimits": "checked: within the ceilings", "CPUCount": "refused: Windows",
		"CPUPercent": "refused: Windows", "IOMaximumIOps": "refused: Windows", "IOMaximumBandwidth": "refused: Windows",
	},
	"network.NetworkingConfig": {"EndpointsConfig": "checked: keys resolved to the job's networks' ids"},
	"network.EndpointSettings": {
		"IPAMConfig": "allowed: an address on the job's own network", "Links": "checked: the job's containers", "Aliases": "allowed: names on the job's own network",
		"MacAddress": "allowed: on the job's own network", "DriverOpts": "refused", "GwPriority": "allowed: gateway choice among the job's networks",
		"NetworkID": "refused: the engine would join it", "EndpointID": "refused", "Gateway": "refused", "IPAddress": "refused",
		"IPPrefixLen": "refused", "IPv6Gateway": "refused", "GlobalIPv6Address": "refused", "GlobalIPv6PrefixLen": "refused",
		"DNSNames": "output: computed by the engine",
	},
	"mount.Mount": {
		"Type": "checked: bind, volume or tmpfs", "Source": "checked: builds dir or the job's volume", "Target": "allowed: in the container",
		"ReadOnly": "allowed: less writable", "Consistency": "allowed: Docker Desktop hint", "BindOptions": "checked: see mount.BindOptions",
		"VolumeOptions": "checked: see mount.VolumeOptions", "ImageOptions": "refused", "TmpfsOptions": "checked: see mount.TmpfsOptions",
		"ClusterOptions": "refused",
	},
	"mount.BindOptions": {
		"Propagation": "checked: not shared or rshared", "NonRecursive": "allowed: mounts less",
		"CreateMountpoint":     "allowed: the source is created in the builds dir, checked at start",
		"ReadOnlyNonRecursive": "allowed: read-only flags", "ReadOnlyForceRecursive": "allowed: read-only flags",
	},
	"mount.VolumeOptions": {
		"NoCopy": "allowed: no image data copied", "Labels": "checked: berth.* dropped, the job's added", "Subpath": "refused",
		"DriverConfig": "checked: no driver, no options",
	},
	"mount.TmpfsOptions": {"SizeBytes": "checked: within the ceiling", "Mode": "allowed: the tmpfs's mode", "Options": "refused"},
	"network.CreateRequest": {
		"Driver": "checked: bridge only", "Scope": "checked: local only", "EnableIPv4": "allowed: the job's own network",
		"EnableIPv6": "allowed: the job's own network", "IPAM": "checked: default driver, no options", "Internal": "allowed: less network",
		"Attachable": "allowed: swarm only", "Ingress": "refused", "ConfigOnly": "refused", "ConfigFrom": "refused",
		"Options": "checked: MTU only", "Labels": "checked: berth.* dropped, the job's added", "Name": "checked: not berth-*, not hex only",
		"CheckDuplicate": "allowed: a stricter create",
	},
	"network.IPAM": {"Driver": "checked: default only", "Options": "refused", "Config": "allowed: subnets of the job's own network"},
	"volume.CreateOptions": {
		"ClusterVolumeSpec": "refused", "Driver": "checked: local only", "DriverOpts": "refused",
		"Labels": "checked: berth.* dropped, the job's added", "Name": "checked: not berth-*",
	},
	"container.ExecOptions": {
		"User": "allowed: a user inside the container", "Privileged": "refused", "Tty": "allowed: streams", "ConsoleSize": "allowed: terminal size",
		"AttachStdin": "allowed: streams", "AttachStderr": "allowed: streams", "AttachStdout": "allowed: streams", "DetachKeys": "allowed: streams",
		"Env": "allowed: the process's own", "WorkingDir": "allowed: in the container", "Cmd": "allowed: in the container", "Detach": "allowed: streams",
	},
	"network.ConnectOptions": {"Container": "checked: the job's container", "EndpointConfig": "checked: see network.EndpointSettings"},
	"container.UpdateConfig": {"RestartPolicy": "refused: the engine would restart unchecked"},
}

// censusTypes are the types the guard decodes; structs embedded in them
// (Resources in HostConfig and UpdateConfig, CreateOptions in
// CreateRequest) count under the embedded type's own name.
var censusTypes = map[string]reflect.Type{
	"container.Config":         reflect.TypeOf(container.Config{}),
	"container.HostConfig":     reflect.TypeOf(container.HostConfig{}),
	"container.Resources":      reflect.TypeOf(container.Resources{}),
	"network.NetworkingConfig": reflect.TypeOf(network.NetworkingConfig{}),
	"network.EndpointSettings": reflect.TypeOf(network.EndpointSettings{}),
	"mount.Mount":              reflect.TypeOf(mount.Mount{}),
	"mount.BindOptions":        reflect.TypeOf(mount.BindOptions{}),
	"mount.VolumeOptions":      reflect.TypeOf(mount.VolumeOptions{}),
	"mount.TmpfsOptions":       reflect.TypeOf(mount.TmpfsOptions{}),
	"network.CreateRequest":    reflect.TypeOf(network.CreateRequest{}),
	"network.IPAM":             reflect.TypeOf(network.IPAM{}),
	"volume.CreateOptions":     reflect.TypeOf(volume.CreateOptions{}),
	"container.ExecOptions":    reflect.TypeOf(container.ExecOptions{}),
	"network.ConnectOptions":   reflect.TypeOf(network.ConnectOptions{}),
	"container.UpdateConfig":   reflect.TypeOf(container.UpdateConfig{}),
}

// ownFields lists t's fields, with the fields of embedded structs that have
// a census entry of their own left out (CreateOptions is not one: its
// fields count under CreateRequest).
func ownFields(t reflect.Type) []string {
	var names []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Anonymous {
			if f.Type == reflect.TypeOf(container.Resources{}) {
				continue
			}
			names = append(names, ownFields(f.Type)...)
			continue
		}
		names = append(names, f.Name)
	}
	return names
}

func TestFieldCensus(t *testing.T) {
	for typeName, typ := range censusTypes {
		classes := fieldCensus[typeName]
		seen := map[string]bool{}
		for _, field := range ownFields(typ) {
			seen[field] = true
			if classes[field] == "" {
				t.Errorf("%s.%s is not in the guard's field census: review what the engine does with it, check it in the filter if needed, and classify it in fieldCensus", typeName, field)
			}
		}
		var stale []string
		for field := range classes {
			if !seen[field] {
				stale = append(stale, field)
			}
		}
		sort.Strings(stale)
		for _, field := range stale {
			t.Errorf("the census lists %s.%s, which the type no longer has", typeName, field)
		}
	}
	for typeName := range fieldCensus {
		if censusTypes[typeName] == nil {
			t.Errorf("the census classifies %s, which is not in censusTypes", typeName)
		}
	}
}
