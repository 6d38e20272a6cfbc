// SPDX-License-Identifier: GPL-2.0
// Added by the vgpu-svm overlay: wrappers for the static inline virtio helpers.

#include <linux/virtio.h>
#include <linux/virtio_config.h>

__rust_helper bool rust_helper_virtio_has_feature(const struct virtio_device *vdev,
						  unsigned int fbit)
{
	return virtio_has_feature(vdev, fbit);
}

__rust_helper int rust_helper_virtio_find_vqs(struct virtio_device *vdev, unsigned int nvqs,
					      struct virtqueue *vqs[],
					      struct virtqueue_info vqs_info[],
					      struct irq_affinity *desc)
{
	return virtio_find_vqs(vdev, nvqs, vqs, vqs_info, desc);
}

__rust_helper void rust_helper_virtio_device_ready(struct virtio_device *dev)
{
	virtio_device_ready(dev);
}

/* The virtio abstraction's queue lock is taken from process and interrupt context. */
__rust_helper unsigned long rust_helper_spin_lock_irqsave(spinlock_t *lock)
{
	unsigned long flags;

	spin_lock_irqsave(lock, flags);
	return flags;
}

__rust_helper void rust_helper_spin_unlock_irqrestore(spinlock_t *lock, unsigned long flags)
{
	spin_unlock_irqrestore(lock, flags);
}
