# Sourced on the GPU machine from the project's root (see make-inf.sh): node on PATH, node_modules, ../shared.
mkdir -p /tmp/node-inf && tar -C /tmp/node-inf -xJf .device/inf/node.tar.xz && export PATH=/tmp/node-inf/bin:$PATH
ln -sfn .device/inf/node_modules node_modules
mkdir -p /tmp/shared-inf && tar -C /tmp/shared-inf -xJf .device/inf/fx.tar.xz && python3 /tmp/shared-inf/fixtures/restore.py /tmp/shared-inf/fixtures
[ -e ../shared ] || ln -s /tmp/shared-inf ../shared
