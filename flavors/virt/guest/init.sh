#!/bin/busybox sh
# /init of the clustercore test guest (flavors/virt/guest): busybox only, no modules.dep.
/bin/busybox mkdir -p /proc /sys /dev /data /bin
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox --install -s /bin
exec </dev/console >/dev/console 2>&1
echo "clustercore-guest: init"
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk \
         failover net_failover virtio_net; do
  insmod /lib/modules/$m.ko || echo "clustercore-guest: insmod $m failed"
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
if mount -t ext4 /dev/vda /data; then
  echo "clustercore-guest: disk mounted"
else
  echo "clustercore-guest: no disk"
fi
# Network words of the kernel command line: ip=ADDR/PREFIX (eth0 up with it), ping=ADDR.
IP=; PING=
for w in $(cat /proc/cmdline); do
  case "$w" in ip=*) IP="${w#ip=}" ;; ping=*) PING="${w#ping=}" ;; esac
done
if [ -n "$IP" ]; then
  i=0
  while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  ip link set lo up
  if ip addr add "$IP" dev eth0 && ip link set eth0 up; then
    echo "clustercore-guest: eth0 $IP"
  else
    echo "clustercore-guest: eth0 failed"
  fi
fi
if [ -n "$PING" ]; then
  # one attempt a second, however long the attempt took (ticks: /proc/uptime in 1/100 s)
  (while true; do
     t0=$(cut -d' ' -f1 /proc/uptime | tr -d .)
     if ping -c 1 -W 1 "$PING" >/dev/null 2>&1; then r=ok; else r=fail; fi
     echo "clustercore-guest: ping $PING $r"
     left=$((100 - $(cut -d' ' -f1 /proc/uptime | tr -d .) + t0))
     [ $left -gt 0 ] && sleep "$((left / 100)).$(printf %02d $((left % 100)))"
   done) &
fi
/bin/clustercore-guest
while true; do sleep 3600; done
