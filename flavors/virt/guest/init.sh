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
/bin/clustercore-guest
while true; do sleep 3600; done
