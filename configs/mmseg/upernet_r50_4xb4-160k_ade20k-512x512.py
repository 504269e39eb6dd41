# ADE20K, UperNet R50, 512x512 crops, 160k iterations, 4 GPUs x 4 images (SyncBN): mmseg's stock
# recipe with a torchvision-layout ResNet (v1b) loaded from a plain tensor state dict.
# See fcn_r50-d8_4xb4-20k_voc12aug-512x512.py for loading.
_base_ = "mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py"

model = dict(
    pretrained=None,
    backbone=dict(type="ResNet", depth=50, init_cfg=dict(type="Pretrained", checkpoint=None)),
)
